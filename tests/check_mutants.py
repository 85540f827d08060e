"""Do the objective tests notice a wrong method? Apply one hand-made edit at a time (a flipped sign, a dropped
weight, a swapped head) to the methods' code, run ``tests/test_method_objectives.py`` (or the tests a mutant names),
and expect it to fail.

    python tests/check_mutants.py            # every mutant; exits 1 if any survives
    python tests/check_mutants.py self_training   # only the mutants of files whose path contains the word

Each file is restored after its run (also on Ctrl-C). Not part of ``make test``: it edits the package's sources.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
M = "udalib/methods/"
L = "udalib/losses/"
OBJECTIVES = ("tests/test_method_objectives.py",)
CONTROLS = ("tests/test_methods.py", "-k", "control")  # the lambda = 0 controls: target weights and their update
V, TV = "udalib/eval/validators.py", ("tests/test_validators.py",)
T, TT = M + "tent.py", ("tests/test_tta.py",)
S, TS = "benchmarks/selection_study.py", ("tests/test_selection_study.py",)
OD = ("tests/test_method_objectives.py", "-k", "dacs")  # DACS's objective
TD = ("tests/test_dacs.py", "-k", "teacher or ema or classmix")  # DACS's pieces and its mean teacher, by hand
DD, TDD = "udalib/eval/domain_distance.py", ("tests/test_domain_distance.py",)
TF = ("tests/test_self_training_full_scale.py",)  # self-training's full-scale geometry, schedule, head and label files
LISTING = ("tests/test_deeplab.py", "-k", "listing")
TSF = ("tests/test_self_training.py", "-k", "fusion")
E, STALE = "udalib/experiment.py", ("tests/test_stale_runs.py",)
MI, LM, R = M + "mic.py", L + "mic.py", "udalib/data/rcs.py"
OM, TM, TR = ("tests/test_method_objectives.py", "-k", "mic"), ("tests/test_mic.py",), ("tests/test_rcs.py",)

# (file, text, replacement[, tests]): each text must occur in the file; tests (pytest arguments) default to OBJECTIVES
MUTANTS = [
    # the shared source loss (Method.source_loss)
    (M + "base.py", "loss = loss + self.cfg.lambda_seg * seg_loss(", "loss = loss - self.cfg.lambda_seg * seg_loss("),
    (M + "base.py", 'self.cfg.lambda_seg * seg_loss(out["aux"]', 'seg_loss(out["aux"]'),
    (M + "base.py", 'self.cfg.lambda_seg * seg_loss(out["aux"]', '0 * seg_loss(out["aux"]'),
    (M + "base.py", 'seg_loss(out["aux"], src.label)', 'seg_loss(out["out"], src.label)'),
    (M + "base.py", 'main_loss(out["out"], src.label)', 'main_loss(out["aux"], src.label)'),
    (M + "base.py", 'main_loss(out["out"], src.label)', 'seg_loss(out["out"], src.label)'),
    (M + "base.py", 'if self.cfg.lambda_seg and "aux" in out:', "if False:"),
    # the reference's listed SGD step (ListingSGD): decay per listing, one shared buffer, every listing
    (M + "base.py", "                if decay:\n                    torch._foreach_add_(grads",
     "                if decay and j == 1:\n                    torch._foreach_add_(grads", LISTING),
    (M + "base.py", "                if going:", "                if False:", LISTING),
    (M + "base.py", "live = [(p, int(k))", "live = [(p, 1)", LISTING),
    ("udalib/models/deeplabv2.py", "counts[id(p)] = counts.get(id(p), 0) + 1", "counts[id(p)] = 1", LISTING),
    # the MaxSquare family's blur: probability and radius
    ("udalib/data/dataset.py", "            if rng.random() < 0.5:\n                blur",
     "            if rng.random() < 0.9:\n                blur", ("tests/test_data.py", "-k", "blur")),
    ("udalib/data/dataset.py", "GaussianBlur(radius=rng.random())", "GaussianBlur(radius=1.0)",
     ("tests/test_data.py", "-k", "blur")),
    # the declared target weights: the control must zero each of them
    (M + "adaptsegnet.py", 'TARGET_WEIGHTS = ("lambda_adv_target1", "lambda_adv_target2")',
     'TARGET_WEIGHTS = ("lambda_adv_target2",)', CONTROLS),
    (M + "clustering.py", '"lambda_ortho", "lambda_sparse")', '"lambda_ortho")', CONTROLS),
    (M + "maxsquare.py", 'TARGET_WEIGHTS = ("lambda_target",)', 'TARGET_WEIGHTS = ("lambda_seg",)', CONTROLS),
    (M + "self_training.py", 'TARGET_WEIGHTS = ("lambda_target",)', "TARGET_WEIGHTS = ()", CONTROLS),

    (M + "minent.py", "l_seg + c.lambda_target * l_ent", "l_seg - c.lambda_target * l_ent"),
    (M + "minent.py", "l_seg + c.lambda_target * l_ent", "l_seg + l_ent"),
    (M + "minent.py", 'entropy_loss(out_t["out"]', 'entropy_loss(out_t["aux"]'),
    (M + "maxsquare.py", '[c.iw_ratio is not None](out_t["out"], c)', '[c.iw_ratio is not None](out_t["aux"], c)'),
    (M + "maxsquare.py", "l_seg + c.lambda_target * l_target", "l_seg - c.lambda_target * l_target"),
    (M + "maxsquare.py", "iw_maxsquare_loss(x, c.iw_ratio)", "iw_maxsquare_loss(x)"),
    (M + "maxsquare.py", 'entropy_loss(x, "original")', 'entropy_loss(x, "log_c")'),
    (M + "maxsquare.py", "iw_entropy_loss(x, c.iw_ratio)", "iw_entropy_loss(x)"),
    (M + "maxsquare.py", "hard_pseudo_label_loss(x, c.threshold)", "hard_pseudo_label_loss(x)"),
    (M + "maxsquare.py", "loss + c.lambda_seg * c.lambda_target * l_guide", "loss + c.lambda_target * l_guide"),
    (M + "maxsquare.py", 'seg_loss(out_t["aux"], pseudo)', 'seg_loss(out_t["out"], pseudo)'),
    (M + "maxsquare.py", 'self_produced_guidance(out_t["out"], out_t["aux"]', 'self_produced_guidance(out_t["out"], '
                                                                            'out_t["out"]'),
    (L + "maxsquare.py", "per_class.gather(1, pred)", "per_class.gather(1, pred).pow(0.5)"),
    (M + "adaptsegnet.py", "self.lambda_adv[k] * l_adv[k]", "l_adv[k]"),
    (M + "adaptsegnet.py", "disc[k](out_t[k].softmax(dim=1))", "disc[k](out_t[k])"),
    (M + "adaptsegnet.py", "disc[k](out_s[k].detach().softmax(dim=1)),\n                                     "
                           "disc[k](out_t[k].detach().softmax(dim=1))",
     "disc[k](out_t[k].detach().softmax(dim=1)),\n                                     "
     "disc[k](out_s[k].detach().softmax(dim=1))"),
    (M + "adaptsegnet.py", 'LAMBDA_ADV = {"aux": "lambda_adv_target1", "out": "lambda_adv_target2"}',
     'LAMBDA_ADV = {"aux": "lambda_adv_target2", "out": "lambda_adv_target1"}'),
    (L + "adversarial.py", "return 0.5 * (gan_loss(d_source", "return (gan_loss(d_source"),
    (L + "adversarial.py", "return gan_loss(d_target, SOURCE, kind)", "return gan_loss(d_target, TARGET, kind)"),
    (M + "snr.py", "loss + method.cfg.lambda_causality * (l_caus + l_cls)", "loss + (l_caus + l_cls)"),
    (M + "snr.py", "loss + method.cfg.lambda_causality * (l_caus + l_cls)",
     "loss + method.cfg.lambda_causality * (l_caus - l_cls)"),
    (M + "snr.py", "seg_loss(head(feats.enhanced.detach()), small)",
     "seg_loss(head(feats.normalized.detach()), small)"),
    (M + "clustering.py", "c.lambda_cluster * terms[\"cluster\"]", "c.lambda_cluster * -terms[\"cluster\"]"),
    (M + "clustering.py", '"cluster": pull - push', '"cluster": pull + push'),
    (M + "clustering.py", 'c.lambda_sparse * terms["sparse"]', 'c.lambda_ortho * terms["sparse"]'),
    (M + "clustering.py", "c.lambda_entropy * l_ent", "c.lambda_cluster * l_ent"),
    (M + "clustering.py", "iw_maxsquare_loss(out_t[\"out\"], c.iw_ratio)",
     "iw_maxsquare_loss(out_t[\"aux\"], c.iw_ratio)"),
    (M + "self_training.py", "l_src + c.lambda_target * l_tgt", "l_src + l_tgt"),
    (M + "self_training.py", 'self._seg(out_t["out"], pseudo)', 'seg_loss(out_t["out"], pseudo)'),
    (M + "self_training.py", "self.source_loss(out_s, src, main_loss=self._seg)", "self.source_loss(out_s, src)"),
    (M + "self_training.py", "self._weak(out_s, src.label) + self._weak(out_t, pseudo)",
     "self._weak(out_s, src.label)"),
    # DACS: the mixed-image term, its weights, ClassMix, the mean teacher (EMA, warm start, train-mode BatchNorm)
    (M + "dacs.py", "l_seg + c.lambda_target * l_mix", "l_seg - c.lambda_target * l_mix", OD),
    (M + "dacs.py", "self.teacher.update(self.model)", "pass", TD),
    (M + "dacs.py", 'TARGET_WEIGHTS = ("lambda_target",)', "TARGET_WEIGHTS = ()",
     ("tests/test_methods.py", "-k", "control and dacs")),
    (M + "dacs.py", "weight = mix(mask, torch.ones_like(pseudo, dtype=w_t.dtype), w_t.expand_as(pseudo))",
     "weight = torch.ones_like(pseudo, dtype=w_t.dtype)", OD),
    (M + "dacs.py", "strong_augment(mix(mask, src.image, tgt.image)", "strong_augment(tgt.image", OD),
    (M + "dacs.py", "label = mix(mask, src.label, pseudo)", "label = pseudo", OD),
    (M + "dacs.py", "        if c.mix:\n", "        if True:\n", OD),  # mix=False must not paste
    (L + "dacs.py", "[: (n + n % 2) // 2]", "[: n // 2]", OD),
    (L + "dacs.py", "[: (n + n % 2) // 2]", "[: n // 2]", TD),
    (L + "dacs.py", "(confidence.detach() >= threshold)", "(confidence.detach() > threshold)", OD),
    (L + "dacs.py", "return (ce * weight.detach()).mean()",
     "return (ce * weight.detach()).sum() / (label != IGNORE_INDEX).sum()", OD),
    (M + "mean_teacher.py", "return min(1 - 1 / (int(self.updates) + 1), self.alpha)", "return self.alpha", TD),
    (M + "mean_teacher.py", "ema.copy_(a * ema + (1 - a) * p.detach())", "ema.copy_((1 - a) * ema + a * p.detach())",
     TD),
    (M + "mean_teacher.py", "        self.ema.train()\n", "        self.ema.eval()\n", OD),
    (M + "mean_teacher.py", "        with frozen_running_stats(self.ema):\n            return self.ema(image)",
     "        return self.ema(image)", TD),
    # MIC: the masked term's sign, the mask, the pseudo-label weight, the teachers, the control's weights
    (MI, "loss + self.cfg.lambda_mic * l_mic", "loss - self.cfg.lambda_mic * l_mic", OM),
    (MI, 'l_mic = masked_consistency_loss(self.model(masked)["out"]', 'l_mic = masked_consistency_loss(self.model('
                                                                     'image)["out"]', OM),
    (LM, "return images * keep.to(images.device, images.dtype)", "return images", OM),
    (MI, 'self.model(masked)["out"], pseudo, q_t)', 'self.model(masked)["out"], pseudo, q_t * 0 + 1)', OM),
    (MI, "        self.mic_teacher.update(self.model)\n", "        pass\n", TM + ("-k", "ema")),
    (MI, "return self.cfg.mic_threshold", "return 0.5", OM),
    (MI, "labelled, self._labelled = self._labelled, None",
     "labelled, self._labelled = super().mic_pseudo_labels(image), None", TM + ("-k", "once")),
    (LM, "(cells > ratio)", "(cells < ratio)", TM + ("-k", "mask")),
    (MI, 'TARGET_WEIGHTS = (*MinEntConfig.TARGET_WEIGHTS, "lambda_mic")',
     "TARGET_WEIGHTS = MinEntConfig.TARGET_WEIGHTS", TM + ("-k", "control")),
    # rare-class sampling: the temperature, the class draw, the formula, the images of a class, the wiring
    (R, "rcs_class_probs(pixels.sum(axis=0), temperature)", "rcs_class_probs(pixels.sum(axis=0), 1e9)", TR),
    (R, "c = int(rng.choice(len(self.probs), p=self.probs))", "c = int(rng.choice(np.flatnonzero(self.probs)))", TR),
    (R, "(1 - freq) / temperature", "freq / temperature", TR),
    (R, "pixels[:, c] > min_pixels", "pixels[:, c] >= 0", TR),
    (E, "                                 exp.rcs_temperature)", "                                 None)", TR),
    # the training crop (DACS): image and label cut alike, on the training sets only
    ("udalib/data/dataset.py", "label[top:top + ch, left:left + cw]", "label[:ch, :cw]", ("tests/test_data.py", "-k",
                                                                                          "crop")),
    (E, "crop=exp.crop if train else None)", "crop=exp.crop)", ("tests/test_data.py", "-k", "crop")),
    # self-training at full scale (MLSL's geometry, lr per round, fc 512 head, labels on disk)
    (M + "self_training.py", "h, w = images.shape[-2:]\n            ph, pw", "h, w = loaded\n            ph, pw", TF),
    (M + "self_training.py", 'size=size, mode="bicubic"', 'size=size, mode="bilinear"', TF),
    (M + "self_training.py", "1.0 / math.sqrt(2) ** r", "1.0 / math.sqrt(2) ** (r + 1)", TF),
    (M + "self_training.py", "nn.Sequential(nn.Linear(model.feat_channels, 512), nn.Linear(512, model.num_classes))",
     "nn.Linear(model.feat_channels, model.num_classes)", TF),
    (M + "self_training.py", "float(torch.rand(1)) < q", "float(torch.rand(1)) < 0.5", TF),
    (M + "self_training.py", 'seg_loss(out["aux"], source_only)', 'seg_loss(out["aux"], label)', TF),
    (M + "self_training.py", "l_weak = self._weak(out, label)", "l_weak = self._weak(out, source_only)", TF),
    (M + "self_training.py", "n * h * w > DISK_BYTES", "n * h * w > DISK_BYTES + 10**9", TF),
    (M + "self_training.py", "        if self.label_file.numel():\n            self._disk_labels = self._open_labels(",
     "        if False:\n            self._disk_labels = self._open_labels(", TF),
    (L + "self_training.py", 'kind="stable")[:number]', 'kind="stable")[::-1][:number]', TF),
    (L + "self_training.py", "chosen = [int(c) for c in priority if int(c) in present] or [int(c) for c in mine_ids",
     "chosen = [int(c) for c in mine_ids if int(c) in present] or [int(c) for c in priority", TF),
    (L + "self_training.py", "return int(rows[k]), int(cols[k]), cls", "return int(rows[k]) + half, int(cols[k]), cls",
     TF),
    (L + "self_training.py", "np.random.RandomState(seed).choice(", "np.random.RandomState(seed + 1).choice(", TF),
    (L + "self_training.py", "hi = int(scale_range[0] * origin), int(scale_range[1] * origin)",
     "hi = int(scale_range[0] * origin), int(scale_range[1] * origin) - 100", TF),
    # MLSL's patch fusion: the full image and every patch in the average
    (L + "self_training.py", "total = full.clone()", "total = torch.zeros_like(full)", TSF),
    (L + "self_training.py", "total[:, r:r + h, c:c + w] += patch", "total[:, r:r + h, c:c + w] += 0 * patch", TSF),
    (L + "self_training.py", "count[r:r + h, c:c + w] += 1", "count[r:r + h, c:c + w] += 0", TSF),
    # runs from weights changed since they started are stale (tests/test_stale_runs.py): the sha256 recorded, the
    # modification times of runs without a record, chains, the table, find_run, get_or_train and resumed runs
    (E, "            if now != then:", "            if False:", STALE + ("-k", "table")),
    (E, "        elif folder is not None and (run_dir / MODEL).is_file() and", "        elif False and",
     STALE + ("-k", "modification")),
    (E, "        if why is None and chain and folder is not None:", "        if False:", STALE + ("-k", "table")),
    ("udalib/cli.py", 'stale, df = df[df.stale != ""], df[df.stale == ""]', 'stale, df = df[df.stale != ""], df',
     STALE + ("-k", "table")),
    (E, "                and stale_reason(folder) is None):", "                ):", STALE + ("-k", "get_or_train")),
    (E, "    if folder is not None and stale_reason(folder) is not None:\n        get_or_train(",
     "    if False:\n        get_or_train(", STALE + ("-k", "get_or_train")),
    (E, "(run_dir / CHECKPOINT).exists():  # an unfinished run from weights since changed\n        _set_aside",
     "(run_dir / CHECKPOINT).exists() and False:\n        _set_aside", STALE + ("-k", "resumed")),
    # label-free validators (tests/test_validators.py)
    (V, "return float(-_entropy(_rows(probs)).mean())", "return float(_entropy(_rows(probs)).mean())", TV),
    (V, "return -torch.special.xlogy(rows, rows).sum(dim=-1)", "return -torch.special.xlogy(rows, rows).mean(dim=-1)",
     TV),
    (V, "_entropy(rows.mean(dim=0)) - _entropy(rows).mean()", "_entropy(rows).mean() - _entropy(rows.mean(dim=0))", TV),
    (V, "rows.movedim(1, -1).reshape(-1, rows.shape[1]) if rows.dim() == 4 else rows\n    if rows.shape[0] == 0",
     "rows.reshape(-1, rows.shape[1]) if rows.dim() == 4 else rows\n    if rows.shape[0] == 0", TV),
    (V, "sim = f @ f.T / temperature", "sim = f @ f.T", TV),
    (V, "sim.fill_diagonal_(-math.inf)", "sim.fill_diagonal_(-1 / temperature)", TV),
    (V, "sim.fill_diagonal_(-math.inf)", "sim.fill_diagonal_(1 / temperature)", TV),
    (V, "f = F.normalize(rows, dim=1)", "f = rows", TV),
    (V, 'matrix_norm(rows, ord="nuc") / rows.shape[0]', 'matrix_norm(rows, ord="fro") / rows.shape[0]', TV),
    (V, 'matrix_norm(rows, ord="nuc") / rows.shape[0]', 'matrix_norm(rows, ord="nuc") / rows.shape[1]', TV),
    (V, "candidates, right=True)", "candidates, right=False)", TV),
    (V, "(conf.double() > threshold)", "(conf.double() >= threshold)", TV),
    (V, '"im": float(_entropy(mean_p) - ent_sum / n_pix)', '"im": float(_entropy(mean_p) + ent_sum / n_pix)', TV),
    (V, "valid = (label >= 0) & (label < num_classes)", "valid = label >= 0", TV),
    # test-time methods (tests/test_tta.py)
    (T, 'l_ent = entropy_map(self.model(tgt.image)["out"]).mean()',
     'l_ent = -entropy_map(self.model(tgt.image)["out"]).mean()', TT),
    (T, 'entropy_map(self.model(tgt.image)["out"]).mean()', 'entropy_map(self.model(tgt.image)["out"]).sum()', TT),
    (T, 'tgt = _need_target(tgt, "tent")', 'tgt = _need_target(tgt, "tent")\n        self.model.eval()', TT),
    (T, "if m.affine for p in (m.weight, m.bias)]", "if m.affine for p in (m.weight,)]", TT),
    (T, "momentum=c.momentum, weight_decay", "momentum=0.0, weight_decay", TT),
    (T, '(1 - a) * getattr(self, f"source_mean_{i}") + a * m.running_mean',
     'a * getattr(self, f"source_mean_{i}") + (1 - a) * m.running_mean', TT),
    (T, '(1 - a) * getattr(self, f"source_var_{i}")', '(1 - a) * getattr(self, f"source_mean_{i}")', TT),
    (T, "m.momentum = None", "m.momentum = 1.0", TT),
    (T, 'm.running_mean.copy_(getattr(self, f"target_mean_{i}"))', "m.running_mean.copy_(m.running_mean)", TT),
    (T, "            m.train()\n        self.model(tgt.image)", "            m.eval()\n        self.model(tgt.image)",
     TT),
    # the checkpoint-selection study (tests/test_selection_study.py)
    (S, "(y / (len(y) - 1)) ** power", "(x / (len(x) - 1)) ** power", TS),
    (S, "miou[int(np.argmax(score))]", "miou[int(np.argmin(score))]", TS),
    (S, 'pd.Series(x).rank(method="average")', 'pd.Series(x).rank(method="first")', TS),
    (S, "done = {_row_key(r) for _, r in read_rows(out).iterrows()}", "done = set()", TS),
    # the terms of Ben-David et al.'s bound (tests/test_domain_distance.py)
    (DD, "return 2.0 * (1.0 - 2.0 * error)", "return 2.0 * (1.0 + 2.0 * error)", TDD),
    (DD, "return 2.0 * (1.0 - 2.0 * error)", "return 2.0 * (1.0 - error)", TDD),
    (DD, "return 2.0 * (1.0 - 2.0 * error)", "return 1.0 - 2.0 * error", TDD),
    (DD, "return float((err_s + err_t) / 2)", "return float(err_s + err_t)", TDD),
    (DD, "weights=_balanced(len(xs), len(xt)), weight_decay", "weights=None, weight_decay", TDD),
    (DD, "weights = _balanced(len(ys), len(yt)) if use_target else None", "weights = None", TDD),
    (DD, "keep = y != IGNORE_INDEX", "keep = y == y", TDD),
    (DD, '"lambda": joint_s + joint_t', '"lambda": joint_s', TDD),
    (DD, "return _probe_errors(features_s, labels_s, features_t, labels_t, use_target=True",
     "return _probe_errors(features_s, labels_s, features_t, labels_t, use_target=False", TDD),
    (DD, "rows = ((torch.arange(h) + 0.5) * H / h)", "rows = ((torch.arange(h) + 0.0) * H / h)", TDD),
]


def main() -> int:
    survivors = []
    chosen = [m for m in MUTANTS if all(word in m[0] for word in sys.argv[1:])]
    for path, old, new, *tests in chosen:
        file = ROOT / path
        text = file.read_text()
        if old not in text:
            print(f"?? {path}: {old!r} not found (update the mutant list)")
            survivors.append((path, old))
            continue
        try:
            file.write_text(text.replace(old, new, 1))
            rc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                                 *(tests[0] if tests else OBJECTIVES)], cwd=ROOT, capture_output=True).returncode
        finally:
            file.write_text(text)
        status = "killed" if rc != 0 else "SURVIVED"
        print(f"{status:8s} {path}: {old.splitlines()[0]!r} -> {new.splitlines()[0]!r}", flush=True)
        if rc == 0:
            survivors.append((path, old))
    print(f"{len(chosen) - len(survivors)}/{len(chosen)} mutants killed")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
