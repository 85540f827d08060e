"""Every full-scale recipe loads strictly, and every original README command has a recipe with the same values.

The expected values below are written from the original READMEs (each command is quoted above its entry; flags a
command does not pass take the seed script's default, cited from its argparse), not read from the recipes, so a
recipe that drifts from its command fails here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from udalib.methods import method_config
from udalib.models import MODELS, build_model
from udalib.recipes import available, data_parallel_summary, load_recipe

IMAGENET_INIT = "DeepLab_resnet_pretrained_init-f81d91e8.pth"  # MaxSquare README: "the model pretrained on ImageNet"
# MaxSquare solve_gta5.py: iter_max = num_iterations (len(Cityscapes train) + 1) x epoch_each_round (2) x round_num
MAXSQUARE_ROUND = 2 * 2976
UDACLUSTERING_ROUND = 2 * 2476  # the same formula over UDAclustering's 2475-image Cityscapes
# train list (LTTM/UDAclustering datasets/)

# MaxSquare's train_source.py/solve_gta5.py defaults the commands rely on: --batch_size_per_gpu 1 (B = 1 with
# --gpu "0"), --crop_size "1280,720" (source), --target_crop_size "1024,512", --backbone deeplabv2_multi,
# --num_classes 19; tools/evaluate.py --flip True for every adapted model (README "3.evaluation")
MAXSQUARE_ADAPT = dict(model="deeplabv2_multi", num_classes=19, batch_size=1, source="gta5/train@720x1280",
                       target="cityscapes/train@512x1024", flip=True, weight_decay=5e-4, poly_steps=None)

# DeepLab-v2 at its lr (MLSL: --base-lr 1e-4 for ResNet-38) with MLSL's fixed lr per round.
# MLSL solve_AO.py round list: 2975 Cityscapes images + int(24966 x src_port) GTA5 images, src_port 0.03 + 0.0025 r
MLSL_ROUNDS_IMAGES = sum(2975 + int(24966 * (0.03 + 0.0025 * r)) for r in range(6))
# the geometry flags shared by the three MLSL / CBST commands (--test-scales 2048 --crop-size 500 ...)
MLSL_GEOMETRY = dict(lr=2.5e-4, lr_policy="round", infer_size=2048, crop_size=500, scale_range=(0.7, 1.3),
                     origin_size=2048, raw_size=(1914, 2048), mine_port=0.8, mine_ids=3, mine_thresh=0.001,
                     src_port=0.03, src_port_step=0.0025, src_port_max=0.06)
# evaluate_cityscapes.py: Cityscapes val fed at 1024x512, the main output upsampled to 2048x1024, no flip;
# compute_iou.py: IoU against the full-resolution gtFine labels
ADAPTSEGNET_EVAL = dict(evaluate_on=("cityscapes/valfull",), eval_protocol="adaptsegnet", flip=False)
# vikolss/DACS configs/configUDA.json with trainUDA.py's constants
DACS_COMMAND = dict(model="deeplabv2", num_classes=19, batch_size=2, steps=250000, poly_steps=None, lr=2.5e-4,
                    momentum=0.9, weight_decay=5e-4, lambda_seg=0.0, lambda_target=1.0, alpha=0.99, threshold=0.968,
                    color_jitter=True, mix_ignore=True, crop=(512, 512), source="gta5/train@720x1280",
                    target="cityscapes/train@512x1024", evaluate_on=("cityscapes/val@512x1024",), flip=False,
                    pretrained=IMAGENET_INIT, init=None, select_every=5000,
                    **{"method.blur": True, "exp.blur": False})  # the mixed images are blurred, not the datasets

CASES = [
    # ---- MaxSquare README (seeds/000), "1. (Optional) Pretrain the model on the source domain (GTA5)":
    # tools/train_source.py --dataset 'gta5' --iter_max 200000 --iter_stop 80000 --freeze_bn False
    #   --weight_decay 5e-4 --lr 2.5e-4 --crop_size "1280,720"
    pytest.param("source_gta5_single", dict(
        method="source_only", model="deeplabv2_multi", num_classes=19, source="gta5/train@720x1280", target=None,
        batch_size=1, steps=80000, poly_steps=200000, lr=2.5e-4, weight_decay=5e-4, lambda_seg=0.0,
        pretrained=IMAGENET_INIT, init=None), id="maxsquare:source-gta5"),
    # "Pretrain the multi-level model on the source domain (GTA5) by adding --multi True" (--lambda_seg default 0.1)
    pytest.param("source_gta5", dict(
        method="source_only", model="deeplabv2_multi", num_classes=19, source="gta5/train@720x1280", target=None,
        batch_size=1, steps=80000, poly_steps=200000, lr=2.5e-4, weight_decay=5e-4, lambda_seg=0.1,
        pretrained=IMAGENET_INIT, init=None), id="maxsquare:source-gta5-multi"),
    # "MaxSquare": tools/solve_gta5.py --backbone "deeplabv2_multi" --restore_id image_net_pretrain --round_num 15
    #   --target_mode "maxsquare" --freeze_bn False --weight_decay 5e-4 --lr 2.5e-4 --lambda_target 0.1
    pytest.param("gta5_maxsquare", dict(
        MAXSQUARE_ADAPT, method="maxsquare", init="GTA5_source.pth", steps=15 * MAXSQUARE_ROUND, lr=2.5e-4,
        lambda_target=0.1, iw_ratio=None, lambda_seg=0.0, guidance=False), id="maxsquare:maxsquare"),
    # "MaxSquare+IW": ... --round_num 15 --target_mode "IW_maxsquare" --lr 2.5e-4 --lambda_target 0.1 --IW_ratio 0.2
    pytest.param("gta5_maxsquare_iw", dict(
        MAXSQUARE_ADAPT, method="maxsquare_iw", init="GTA5_source.pth", steps=15 * MAXSQUARE_ROUND, lr=2.5e-4,
        lambda_target=0.1, iw_ratio=0.2, lambda_seg=0.0, guidance=False), id="maxsquare:iw"),
    # "MaxSquare+IW+Multi": ... --restore_id add_multi --round_num 15 --target_mode "IW_maxsquare" --lr 2.5e-4
    #   --target_crop_size "1280,640" --lambda_target 0.09 --IW_ratio 0.2 --multi True --lambda_seg 0.1 --threshold 0.95
    pytest.param("gta5_maxsquare_iw_multi", dict(
        MAXSQUARE_ADAPT, method="maxsquare_iw_multi", init="GTA5_source_multi.pth", target="cityscapes/train@640x1280",
        steps=15 * MAXSQUARE_ROUND, lr=2.5e-4, lambda_target=0.09, iw_ratio=0.2, lambda_seg=0.1, guidance=True,
        threshold=0.95), id="maxsquare:iw-multi"),
    # "if your want to continue training", MaxSquare: --continue_training True --restore_id gta52cityscapes_maxsquare
    #   --round_num 5 --target_mode "maxsquare" --weight_decay 5e-4 --lr 2.05e-7 --lambda_target 0.1
    pytest.param("gta5_maxsquare_continue", dict(
        MAXSQUARE_ADAPT, method="maxsquare", init="GTA5_maxsquare.pth", steps=5 * MAXSQUARE_ROUND, lr=2.05e-7,
        lambda_target=0.1, iw_ratio=None, lambda_seg=0.0, guidance=False), id="maxsquare:continue-maxsquare"),
    # continue, MaxSquare+IW: --restore_id gta52cityscapes_IW_maxsquare --round_num 10 --target_mode "IW_maxsquare"
    #   --lr 2.05e-7 --lambda_target 0.1 --IW_ratio 0.2
    pytest.param("gta5_maxsquare_iw_continue", dict(
        MAXSQUARE_ADAPT, method="maxsquare_iw", init="GTA5_maxsquare_iw.pth", steps=10 * MAXSQUARE_ROUND, lr=2.05e-7,
        lambda_target=0.1, iw_ratio=0.2, lambda_seg=0.0, guidance=False), id="maxsquare:continue-iw"),
    # continue, MaxSquare+IW+Multi: --round_num 5 --target_mode "IW_maxsquare" --lr 2.05e-7 --target_crop_size
    #   "1280,640" --lambda_target 0.09 --IW_ratio 0.2 --multi True --lambda_seg 0.1 --threshold 0.95
    pytest.param("gta5_maxsquare_iw_multi_continue", dict(
        MAXSQUARE_ADAPT, method="maxsquare_iw_multi", init="GTA5_maxsquare_iw_multi.pth",
        target="cityscapes/train@640x1280", steps=5 * MAXSQUARE_ROUND, lr=2.05e-7, lambda_target=0.09, iw_ratio=0.2,
        lambda_seg=0.1, guidance=True, threshold=0.95), id="maxsquare:continue-iw-multi"),
    # MinEnt: the README reports 42.2 but gives no command; the MaxSquare command with --target_mode entropy
    pytest.param("gta5_minent", dict(
        MAXSQUARE_ADAPT, method="minent", init="GTA5_source.pth", steps=15 * MAXSQUARE_ROUND, lr=2.5e-4,
        lambda_target=0.1, lambda_seg=0.0, normalization="original"), id="maxsquare:minent"),
    # SYNTHIA -> Cityscapes MaxSquare+IW+Multi (README: 41.4 / 48.2; no command): the GTA5 IW+Multi command with
    # --source_dataset synthia --num_classes 16, SYNTHIA resized to 1280x760 ("We resize images to 1280x760")
    pytest.param("synthia_maxsquare_iw_multi", dict(
        MAXSQUARE_ADAPT, method="maxsquare_iw_multi", num_classes=16, source="synthia/train@760x1280",
        init="SYNTHIA_source_multi.pth", target="cityscapes/train@640x1280", steps=15 * MAXSQUARE_ROUND, lr=2.5e-4,
        lambda_target=0.09, iw_ratio=0.2, lambda_seg=0.1, guidance=True, threshold=0.95), id="maxsquare:synthia"),
    # SYNTHIA source model (README: "Download the checkpoint pretrained on SYNTHIA"; no command): the multi-level
    # source command with --dataset synthia --num_classes 16 at 1280x760
    pytest.param("source_synthia", dict(
        method="source_only", model="deeplabv2_multi", num_classes=16, source="synthia/train@760x1280", target=None,
        batch_size=1, steps=80000, poly_steps=200000, lr=2.5e-4, lambda_seg=0.1, pretrained=IMAGENET_INIT),
        id="maxsquare:source-synthia"),
    # Cityscapes-to-CrossCity, "(Optional) Pretrain the model on the source domain (Cityscapes)":
    # tools/train_source.py --dataset 'cityscapes' --iter_max 200000 --iter_stop 80000 --freeze_bn False
    #   --weight_decay 5e-4 --lr 2.5e-4 --crop_size "1024,512" --num_classes 13
    pytest.param("source_cityscapes13", dict(
        method="source_only", model="deeplabv2_multi", num_classes=13, source="cityscapes/train@512x1024",
        target=None, batch_size=1, steps=80000, poly_steps=200000, lr=2.5e-4, weight_decay=5e-4, lambda_seg=0.0,
        pretrained=IMAGENET_INIT), id="maxsquare:source-cityscapes13"),

    # ---- AdaptSegNet README (seeds/001), "Train the GTA5-to-Cityscapes model". Flags the commands do not pass are
    # train_gta2cityscapes_multi.py defaults: --learning-rate 2.5e-4, --learning-rate-D 1e-4,
    # --num-steps 250000, --num-steps-stop 150000, --input-size 1280,720, --input-size-target 1024,512,
    # --batch-size 1, --restore-from the ImageNet init; BN affine frozen (DeeplabMulti)
    # (single-level): --lambda-seg 0.0 --lambda-adv-target1 0.0 --lambda-adv-target2 0.001
    pytest.param("gta5_adaptsegnet", dict(
        method="adaptsegnet", lambda_seg=0.0, lambda_adv_target1=0.0, lambda_adv_target2=1e-3, gan="vanilla",
        levels=("out",), lr=2.5e-4, lr_d=1e-4, steps=150000, poly_steps=250000, batch_size=1,
        source="gta5/train@720x1280", target="cityscapes/train@512x1024", pretrained=IMAGENET_INIT, init=None,
        model="deeplabv2_multi", model_args={"freeze_bn_affine": True}, num_classes=19, **ADAPTSEGNET_EVAL),
        id="adaptsegnet:single"),
    # (multi-level): --lambda-seg 0.1 --lambda-adv-target1 0.0002 --lambda-adv-target2 0.001
    pytest.param("gta5_adaptsegnet_multi", dict(
        method="adaptsegnet_multi", lambda_seg=0.1, lambda_adv_target1=2e-4, lambda_adv_target2=1e-3, gan="vanilla",
        levels=("aux", "out"), lr=2.5e-4, lr_d=1e-4, steps=150000, poly_steps=250000, batch_size=1,
        source="gta5/train@720x1280", target="cityscapes/train@512x1024", pretrained=IMAGENET_INIT, init=None,
        model="deeplabv2_multi", model_args={"freeze_bn_affine": True}, num_classes=19, **ADAPTSEGNET_EVAL),
        id="adaptsegnet:multi"),
    # (single-level with LS-GAN): --lambda-seg 0.0 --lambda-adv-target1 0.0 --lambda-adv-target2 0.01 --gan LS
    pytest.param("gta5_adaptsegnet_lsgan", dict(
        method="adaptsegnet", lambda_seg=0.0, lambda_adv_target1=0.0, lambda_adv_target2=0.01, gan="ls",
        levels=("out",), lr=2.5e-4, lr_d=1e-4, steps=150000, poly_steps=250000, batch_size=1,
        source="gta5/train@720x1280", target="cityscapes/train@512x1024", pretrained=IMAGENET_INIT, init=None,
        model="deeplabv2_multi", model_args={"freeze_bn_affine": True}, num_classes=19, **ADAPTSEGNET_EVAL),
        id="adaptsegnet:lsgan"),

    # ---- SNR README (seeds/002), "Domain Generalization Setting": tools/train_source.py --dataset 'gta5'
    #   --iter_max 200000 --iter_stop 80000 --freeze_bn False --weight_decay 5e-4 --lr 2.5e-4 --crop_size "1280,720"
    # (no --multi: the SNR copy's default is False); udalib trains it on the SNR backbone (the setting's point)
    pytest.param("gta5_snr", dict(
        method="snr", model="deeplabv2_multi_snr", num_classes=19, source="gta5/train@720x1280", target=None,
        batch_size=1, steps=80000, poly_steps=200000, lr=2.5e-4, weight_decay=5e-4, lambda_seg=0.0,
        pretrained=IMAGENET_INIT, flip=True), id="snr:generalization"),
    # "SNR integrated backbone": tools/solve_gta5.py --backbone "deeplabv2_multi_snr" --pretrained_ckpt_file
    #   "./pretrained_model/GTA5_source.pth" --round_num 5 --target_mode "maxsquare" --weight_decay 5e-4 --lr 2.5e-4
    #   --lambda_target 0.1;  Eval: tools/evaluate.py --flip True
    # The released code (microsoft/SNR segmentation/): SNR blocks in no optimizer group, causality loss never called
    pytest.param("gta5_snr_maxsquare", dict(
        MAXSQUARE_ADAPT, method="snr_maxsquare", model="deeplabv2_multi_snr", init="GTA5_source.pth",
        steps=5 * MAXSQUARE_ROUND, lr=2.5e-4, lambda_target=0.1, iw_ratio=None, lambda_seg=0.0, guidance=False,
        mode="reference"), id="snr:snr-ms"),
    # the same command with the paper's SNR-MS: SNR blocks trained and the dual causality loss (udalib's design)
    pytest.param("gta5_snr_maxsquare_paper", dict(
        MAXSQUARE_ADAPT, method="snr_maxsquare", model="deeplabv2_multi_snr", init="GTA5_source.pth",
        steps=5 * MAXSQUARE_ROUND, lr=2.5e-4, lambda_target=0.1, iw_ratio=None, lambda_seg=0.0, guidance=False,
        mode="paper", lambda_causality=0.01), id="snr:snr-ms-paper"),

    # ---- UDAclustering README (seeds/003), "Source Pre-training (example) GTA5 with ResNet101":
    # tools/train_source.py --backbone "resnet101" --dataset "gta5" --num_classes 19 --iter_max 200000
    #   --iter_stop 80000 --lr 2.5e-4 --crop_size "1280,720"   (the MaxSquare single-level source command)
    pytest.param("source_gta5_single", dict(
        method="source_only", num_classes=19, source="gta5/train@720x1280", steps=80000, poly_steps=200000,
        lr=2.5e-4, lambda_seg=0.0), id="udaclustering:source-resnet101"),
    # "GTA5-to-Cityscapes with ResNet101": tools/train_UDA.py --source_dataset "gta5" --num_classes 19 --backbone
    #   "resnet101" --round_num 5 --lr 2.5e-4 --lambda_cluster 2e-2 --lambda_ortho 2. --lambda_sparse 5e-1
    #   --lambda_entropy 1e-1 --target_crop_size "1024,512" --crop_size "1280,720"   (--IW_ratio default 0.2)
    pytest.param("gta5_clustering_resnet101", dict(
        method="clustered_embeddings", model="deeplabv2_multi", num_classes=19, source="gta5/train@720x1280",
        target="cityscapes/train@512x1024", steps=5 * UDACLUSTERING_ROUND, batch_size=1, lr=2.5e-4,
        lambda_cluster=2e-2, lambda_ortho=2.0, lambda_sparse=0.5, lambda_entropy=0.1, iw_ratio=0.2,
        init="GTA5_source.pth"), id="udaclustering:gta5-resnet101"),
    # "GTA5-to-Cityscapes with VGG-16": ... --backbone "vgg16" --round_num 5 --lr 2.5e-4 --lambda_cluster 1e-1
    #   --lambda_ortho 2e-2 --lambda_sparse 2e-2 --lambda_entropy 2e-2 --target_crop_size "1024,512"
    #   --crop_size "1280,720"
    pytest.param("gta5_clustering_vgg16", dict(
        method="clustered_embeddings", model="deeplabv2_vgg16", num_classes=19, source="gta5/train@720x1280",
        target="cityscapes/train@512x1024", steps=5 * UDACLUSTERING_ROUND, batch_size=1, lr=2.5e-4,
        lambda_cluster=0.1, lambda_ortho=2e-2, lambda_sparse=2e-2, lambda_entropy=2e-2, iw_ratio=0.2,
        init="GTA5_source_vgg16.pth"), id="udaclustering:gta5-vgg16"),
    # "SYNTHIA-to-Cityscapes with ResNet-101": --source_dataset "synthia" --num_classes 16 --backbone "resnet101"
    #   --round_num 5 --lr 2.5e-4 --lambda_cluster 2e-2 --lambda_ortho 1e-1 --lambda_sparse 1 --lambda_entropy 5e-2
    #   --IW_ratio 0. --target_crop_size "1024,512" --crop_size "1280,760"
    pytest.param("synthia_clustering_resnet101", dict(
        method="clustered_embeddings", model="deeplabv2_multi", num_classes=16, source="synthia/train@760x1280",
        target="cityscapes/train@512x1024", steps=5 * UDACLUSTERING_ROUND, batch_size=1, lr=2.5e-4,
        lambda_cluster=2e-2, lambda_ortho=0.1, lambda_sparse=1.0, lambda_entropy=5e-2, iw_ratio=0.0),
        id="udaclustering:synthia-resnet101"),
    # "SYNTHIA-to-Cityscapes with VGG16": --source_dataset "synthia" --num_classes 16 --backbone "vgg16" --round_num 5
    #   --lr 2.5e-4 --lambda_cluster 5e-2 --lambda_ortho 5e-2 --lambda_sparse 2e-2 --lambda_entropy 1e-2
    #   --target_crop_size "1024,512" --crop_size "1280,760"
    pytest.param("synthia_clustering_vgg16", dict(
        method="clustered_embeddings", model="deeplabv2_vgg16", num_classes=16, source="synthia/train@760x1280",
        target="cityscapes/train@512x1024", steps=5 * UDACLUSTERING_ROUND, batch_size=1, lr=2.5e-4,
        lambda_cluster=5e-2, lambda_ortho=5e-2, lambda_sparse=2e-2, lambda_entropy=1e-2, iw_ratio=0.2),
        id="udaclustering:synthia-vgg16"),

    # ---- MLSL README (seeds/004), "MLSL(SISC)": issegm/solve_AO.py --num-round 6 --test-scales 2048
    #   --scale-rate-range 0.7,1.3 --batch-images 2 --crop-size 500 --origin-size-tgt 2048 --init-tgt-port 0.15
    #   --init-src-port 0.03 --seed-int 0 --mine-port 0.8 --mine-id-number 3 --mine-thresh 0.001 --base-lr 1e-4
    #   --to-epoch 2 --kc-policy cb --with-prior True (solve_AO.py: tgt +0.05 per round up to 0.5, src +0.0025 up to
    #   0.06, lr / sqrt 2 per round, epr = 2 epochs per round over the source subset + the target list; OHEM loss;
    #   25 SI patches of 512x512; flip-averaged target predictions (method.flip)); evaluate.py --test-flipping.
    # udalib: DeepLab-v2, epochs over the 2975 Cityscapes train images + int(24966 x src_port) GTA5 images
    pytest.param("gta5_mlsl", dict(
        method="mlsl", rounds=6, batch_size=2, steps=MLSL_ROUNDS_IMAGES * 2 // 2, tgt_port=0.15, tgt_port_step=0.05,
        tgt_port_max=0.5, spatial_prior=True, loss="ohem", patches=25, patch_size=(512, 512), weak_labels=False,
        **MLSL_GEOMETRY, **{"method.flip": True, "exp.flip": True}, num_classes=19, source="gta5/train@720x1280",
        target="cityscapes/train@512x1024", init="GTA5_source.pth"), id="mlsl:sisc"),
    # "MLSL(SISC-PWL)": issegm1/solve_AO.py, the same flags with --batch-images 1 (plain CE + the pseudo-weak-label
    #   head: pool -> fc 512 -> fc 19, util1/symbol/resnet_v2.py rn_top_1; no SI patches)
    pytest.param("gta5_mlsl_pwl", dict(
        method="mlsl", rounds=6, batch_size=1, steps=MLSL_ROUNDS_IMAGES * 2, tgt_port=0.15, spatial_prior=True,
        loss="ce", patches=0, weak_labels=True, weak_head="fc512", **MLSL_GEOMETRY,
        **{"method.flip": True, "exp.flip": True}, num_classes=19, init="GTA5_source.pth"), id="mlsl:sisc-pwl"),
    # CBST (the README's "This code is based on CBST"): the SISC command without SI patches, plain CE
    pytest.param("gta5_cbst", dict(
        method="cbst", rounds=6, batch_size=2, steps=MLSL_ROUNDS_IMAGES * 2 // 2, tgt_port=0.15, spatial_prior=True,
        loss="ce", patches=0, weak_labels=False, **MLSL_GEOMETRY, **{"method.flip": True, "exp.flip": True},
        num_classes=19, init="GTA5_source.pth"), id="mlsl:cbst"),

    # ---- DACS README: trainUDA.py --config ./configs/configUDA.json ("training": batch_size 2, SGD momentum 0.9,
    #   num_iterations 250000, learning_rate 2.5e-4, Poly 0.9, weight_decay 5e-4; "data": input_size 512,512, crop;
    #   "unlabeled": consistency_weight 1, threshold_uniform, class mix, color_jitter, blur; "pretrained": "coco";
    #   "val_per_iter": 5000, "save_best_model"), GTA5 resized to 1280x720 (trainUDA.py:322), Cityscapes halved
    #   (RandomCrop_city), evaluated at 1024x512 without flip; teacher alpha 0.99, threshold 0.968 (trainUDA.py)
    pytest.param("gta5_dacs", dict(
        DACS_COMMAND, method="dacs"), id="dacs:configUDA"),
    # MIC on that host (seg/experiments.py id 81: separatetrgaug, mask_ratio 0.7, mask_block_size 32 at 512 crops,
    #   mask_lambda 1, mask_alpha and mask_pseudo_threshold "same")
    pytest.param("gta5_dacs_mic", dict(
        DACS_COMMAND, method="dacs_mic", lambda_mic=1.0, mask_ratio=0.7, mask_block=32, mic_augment=True),
        id="mic:dacs-deeplabv2"),
]

EXPERIMENT_PATHS = ("init", "pretrained")  # compared by file name: the folder is the user's --data-root


def _value(exp, cfg, key: str):
    """``key`` from the Experiment (run-level fields) or else from the resolved method config; where both have the
    key (``flip``: evaluation vs self-training's target predictions), ``exp.KEY`` or ``method.KEY`` says which."""
    scope, _, name = key.rpartition(".")
    if scope:
        key, in_exp, in_cfg = name, scope == "exp", scope == "method"
    else:
        in_exp, in_cfg = hasattr(exp, key), hasattr(cfg, key)
    assert in_exp != in_cfg, f"{key!r} is ambiguous or unknown (Experiment: {in_exp}, method config: {in_cfg})"
    value = getattr(exp, key) if in_exp else getattr(cfg, key)
    if key in EXPERIMENT_PATHS and value is not None:
        return Path(value).name
    return tuple(value) if isinstance(value, list) else value


@pytest.mark.parametrize(("recipe", "expected"), CASES)
def test_recipe_has_the_values_of_its_seed_readme_command(recipe, expected):
    exp = load_recipe(recipe, data_root="/data/prepared")
    cfg = method_config(exp.method, exp.preset, **exp.method_args)
    actual = {key: _value(exp, cfg, key) for key in expected}
    wrong = {key: (actual[key], want) for key, want in expected.items()
             if actual[key] != (pytest.approx(want) if isinstance(want, float) else want)}
    assert not wrong, f"{recipe}: (recipe, README) differ: {wrong}"


@pytest.mark.parametrize("name", available())
def test_a_recipe_states_only_the_method_parameters_that_depart_from_its_defaults(name):
    """The resolved default of a method parameter (its config dataclass, then the recipe's ``preset``) is its one
    source: a recipe that writes the same value again fails, naming the recipe and the keys to remove."""
    exp = load_recipe(name, data_root="/data/prepared")
    defaults = method_config(exp.method, exp.preset)
    plain = lambda value: json.loads(json.dumps(value, default=list))  # noqa: E731 -- a tuple default, a YAML list
    restated = [key for key, value in exp.method_args.items() if plain(value) == plain(getattr(defaults, key))]
    assert not restated, (f"recipe {name}.yaml restates the default of method_args {', '.join(restated)} (the "
                          f"{exp.method} config{f', preset {exp.preset}' if exp.preset else ''}): remove "
                          f"{'them' if len(restated) > 1 else 'it'}")


def test_every_recipe_is_checked_against_a_readme_command():
    checked = {case.values[0] for case in CASES}
    # CrossCity recipes are checked against the MaxSquare README's CrossCity command in their own test
    unchecked = sorted(set(available()) - checked - {n for n in available() if n.startswith("crosscity_")})
    assert not unchecked, f"recipes without a README command in CASES: {unchecked}"


@pytest.mark.parametrize("name", available())
def test_recipe_resolves_to_a_method_config_and_a_model(name):
    exp = load_recipe(name, data_root="/data/prepared")
    cfg = method_config(exp.method, exp.preset, **exp.method_args)
    assert exp.model in MODELS and exp.device == "cuda"
    for path in (exp.init, exp.pretrained):
        assert path is None or path.startswith("/data/prepared/")
    assert (exp.init is None) != (exp.pretrained is None)  # adapted from a source model, or trained from ImageNet
    with torch.device("meta"):
        build_model(exp.model, exp.num_classes, **exp.model_args)
    # every seed trains DeepLab-v2 at 2.5e-4 (heads 10x); MaxSquare's continue commands at 2.05e-7
    assert cfg.lr == pytest.approx(2.05e-7 if name.endswith("_continue") else 2.5e-4)


def _write(tmp_path, text: str) -> str:
    path = tmp_path / "my_recipe.yaml"
    path.write_text(text)
    return str(path)


BASE = "method: maxsquare\npreset: null\nmodel: deeplabv2_multi\n"


def test_an_unknown_top_level_key_names_the_file_and_lists_the_fields(tmp_path):
    with pytest.raises(TypeError, match=r"recipe my_recipe.yaml: Experiment has no field 'step'; fields: .*steps"):
        load_recipe(_write(tmp_path, BASE + "step: 10\n"))


def test_an_unknown_method_parameter_is_an_error_at_load_time(tmp_path):
    with pytest.raises(TypeError, match=r"recipe my_recipe.yaml: method 'maxsquare' has no parameter 'lamda_target'"
                                        r".*lambda_target"):
        load_recipe(_write(tmp_path, BASE + "method_args:\n  lamda_target: 0.1\n"))


def test_an_unknown_model_argument_is_an_error_at_load_time(tmp_path):
    with pytest.raises(TypeError, match=r"recipe my_recipe.yaml: model 'deeplabv2_multi'.*freeze_bn"):
        load_recipe(_write(tmp_path, BASE + "model_args: {freeze_bn: true}\n"))


def test_an_unknown_preset_and_a_key_given_twice_are_errors(tmp_path):
    with pytest.raises(ValueError, match=r"recipe my_recipe.yaml: method 'maxsquare' has no preset 'gpu'"):
        load_recipe(_write(tmp_path, BASE.replace("preset: null", "preset: gpu")))
    with pytest.raises(ValueError, match=r"recipe my_recipe.yaml: key 'steps' given twice .* line 1: keep one"):
        load_recipe(_write(tmp_path, BASE + "steps: 10\nsteps: 20\n"))
    with pytest.raises(ValueError, match=r"recipe my_recipe.yaml is not valid YAML"):
        load_recipe(_write(tmp_path, BASE + "method_args: {lr: 1\n"))


def test_an_override_with_an_unknown_field_is_an_error():
    with pytest.raises(TypeError, match=r"recipe gta5_maxsquare.yaml: Experiment has no field 'data_dir'"):
        load_recipe("gta5_maxsquare", data_dir="/data")


def test_unknown_recipe_lists_the_available_ones():
    with pytest.raises(ValueError, match="available recipes: .*gta5_snr"):
        load_recipe("gta5_snrr")


def test_the_torchrun_summary_states_the_effective_batch_and_lr():
    exp = load_recipe("gta5_maxsquare")  # batch 1, lr 2.5e-4, 89,280 steps
    assert data_parallel_summary(exp, 4) == (
        "4 processes x batch 1 = effective batch 4 per step (gradients averaged), lr 0.00025 as in the recipe "
        "(not rescaled), 89280 steps: 357120 source images (one process: 89280; --set steps=22320 keeps that number)")
    assert "effective batch 8 per step" in data_parallel_summary(load_recipe("gta5_mlsl"), 4)  # batch 2 each


@pytest.mark.parametrize("name", available())
def test_recipes_of_the_deeplab_v2_code_bases_take_their_listed_sgd_step(name):
    """AdaptSegNet, MaxSquare, SNR and UDAclustering build their SGD from ``get_1x_lr_params_NOscale``, which lists
    each backbone tensor 3-4 times (VGG-16: 2); their recipes reproduce that step (``ListingSGD``). MLSL and CBST
    (MXNet, ResNet-38) list each tensor once."""
    exp = load_recipe(name, data_root="/data/prepared")
    cfg = method_config(exp.method, exp.preset, **exp.method_args)
    assert cfg.legacy_param_multiplicity is (exp.method not in ("cbst", "mlsl"))


@pytest.mark.parametrize("name", available())
def test_recipes_of_the_maxsquare_family_blur_their_training_images(name):
    """MaxSquare, SNR and UDAclustering (``--gaussian_blur`` default True, ``datasets/*_Dataset.py``
    ``_train_sync_transform``) blur source and target training images; AdaptSegNet, MLSL/CBST and DACS do not
    (DACS blurs its mixed images in its step: the method parameter ``blur``)."""
    exp = load_recipe(name, data_root="/data/prepared")
    assert exp.blur is (exp.method not in ("adaptsegnet", "adaptsegnet_multi", "cbst", "mlsl", "dacs", "dacs_mic"))


@pytest.mark.parametrize(("name", "trained"), [("gta5_snr_maxsquare", False), ("gta5_snr_maxsquare_paper", True)])
def test_snr_ms_recipes_run_the_released_code_and_the_paper_variant(name, trained):
    """The README command's recipe optimises no SNR parameter and has no causality loss, as the released code
    (``optim_parameters``: conv1..layer4 and the heads); the paper variant trains both."""
    from udalib.methods import build_method

    exp = load_recipe(name, data_root="/data/prepared")
    with torch.device("meta"):
        model = build_model(exp.model, exp.num_classes, **exp.model_args)
        method = build_method(exp.method, model, exp.preset, **exp.method_args)
    listed = {id(p) for g in method.optimizers["model"].param_groups for p in g["params"]}
    snr = [p for m in model.snr_modules() for p in m.parameters()]
    assert snr and all((id(p) in listed) is trained for p in snr)
    assert (method.causality is not None) is trained
    backbone = {id(p) for m in model.backbone_modules() for p in m.parameters() if p.requires_grad}
    assert backbone <= listed


def test_a_named_eval_protocol_is_checked_at_load_time():
    with pytest.raises(ValueError, match=r"eval_protocol 'adaptsegnet' sets flip=False: drop flip=True"):
        load_recipe("gta5_adaptsegnet", flip=True)
    with pytest.raises(ValueError, match=r"eval_protocol='compute_iou' is not a protocol; choose one of maxsquare, "
                                        r"adaptsegnet"):
        load_recipe("gta5_adaptsegnet", eval_protocol="compute_iou")
