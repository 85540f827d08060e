"""The words a student reads: the notebooks, the course pages, the README, and every comment, docstring and message
of the library (``viz.show_source`` shows its source in the notebooks).

Two kinds of words are refused. "The seed" for the original research code: students read "seed" as a random seed,
so the original code is "the original" or its repository's name (``ZJULearning/MaxSquareLoss``). And the project's
own history ("generator version 1", "while tuning", "time budget"): the text says what is, not how it came to be.
A random seed stays a seed: "seeds 0-4", "the same seed", "over the seeds", ``seed=0``.
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# "seed" meaning the original code
ORIGINAL_AS_SEED = re.compile(
    r"\bthe\s+seeds?\b(?!\s*[\d(=])"  # the seed, the seeds (not "the seeds 0-4", "the seed (0)", "the seed=")
    r"|\bseeds'(?=\s+[a-z])"  # the seeds' policy, seeds' checkpoints (a singular seed' is a closing quote: 'seed')
    r"|\bseed's\b"  # the seed's flag (random-seed uses are allowed below: "each seed's runs")
    r"|\bseed[\s-]+(?:code|codes?\s+base|repo\w*|readmes?|papers?|scripts?|flags?|loops?|implementations?|authors?"
    r"|checkpoints?|policy|protocols?|normali[sz]ation)\b"  # seed code (base), seed README, seed papers, ...
    r"|\b(?:as|like)\s+(?:in\s+)?(?:the\s+|every\s+|each\s+)?seeds?\b(?!\s*\d)"  # as in the seed, as every seed does
    r"|\b(?:all|every|both)\s+(?:the\s+)?seeds\s+(?:score|do|use|save|resize|read|train|disagree)"
    r"|\bsegmentation\s+seeds\b",
    re.IGNORECASE)

# random-seed phrases the pattern above also matches; a match inside one of them is allowed
RANDOM_SEED_PHRASES = re.compile(
    r"\bthe\s+same\s+seeds?\b"
    r"|\b(?:over|across|of|on|for|from|in|to|with|by)\s+the\s+(?:\w+\s+)?seeds?\b"
    r"(?!'|\s+(?:code|readmes?|papers?|repo\w*|scripts?|loops?|flags?|policy|protocols?))"
    r"|\bthe\s+seeds?\s+(?:found|you\s+pick|picked|chosen|listed|given|of\s+(?:one|an|the|each|this|that|its)\b"
    r"|on\s+which|that\b|where\b|then\s+drives|drives|determines|sets|fixes|value)"
    r"|\bthe\s+seeds?\s+(?:is|are|was)\s+(?:fixed|the\s+same|\d)"
    r"|\b(?:each|every|one|a|that|this|its|their|another|which|any|per)\s+seed's\b"
    r"|\b(?:the\s+)?seed's\s+(?:runs?|four|standard|sign|source\s+model|model|margins?|score|checkpoints?\s+of)"
    r"|\bthe\s+other\s+seeds'|\bseeds'\s+(?:standard|runs?\b|margins?|scores?|means?)",
    re.IGNORECASE)

# the project's development history
HISTORY = re.compile(
    r"\bgenerator\s+version\s+\d|\bversion\s+[12]'s\b|\b(?:in|on|of)\s+v[12]\b|\bv[12]\s+composite"
    r"|\bwhile\s+tuning|\btime\s+budgets?\b|\b\d+\s*s\s+budgets?\b|\bno\s+GPU\s+was\s+available"
    r"|\bwas\s+available\s+to\s+this\s+project|\bstill\s+to\s+be\s+taken|\bused\s+to\s+be\b|\bearlier\s+we\b"
    r"|\bwe\s+(?:first|originally|used\s+to|later)\b|\bwhat\s+changed\s+from\b|\bpreviously\b",
    re.IGNORECASE)


def _python_words(path: Path) -> list[tuple[int, str]]:
    """``(line, text)`` of every comment and string literal of a Python file: docstrings, messages, and the
    markdown cells of a percent-format notebook source."""
    source = path.read_text(encoding="utf-8")
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError):  # not valid Python: read every line
        return list(enumerate(source.splitlines(), start=1))
    return [(t.start[0], t.string) for t in tokens if t.type in (tokenize.COMMENT, tokenize.STRING)]


def _text_words(path: Path) -> list[tuple[int, str]]:
    return list(enumerate(path.read_text(encoding="utf-8").splitlines(), start=1))


def _yaml_words(path: Path) -> list[tuple[int, str]]:
    return [(n, line[line.index("#"):]) for n, line in _text_words(path) if "#" in line]


def _files(kind: str) -> list[Path]:
    if kind == "library":
        return sorted((ROOT / "udalib").rglob("*.py"))
    if kind == "recipes":
        return sorted((ROOT / "udalib" / "recipes").glob("*.yaml"))
    if kind == "notebooks":
        return sorted((ROOT / "notebooks" / "src").glob("*.py"))
    return [*sorted((ROOT / "notebooks").glob("*.md")), ROOT / "README.md", ROOT / "ARCHITECTURE.md",
            ROOT / "benchmarks" / "RESULTS.md"]


def _read(path: Path) -> list[tuple[int, str]]:
    return {".py": _python_words, ".yaml": _yaml_words}.get(path.suffix, _text_words)(path)


def seed_for_original(text: str) -> list[str]:
    """The phrases of ``text`` that call the original code "the seed" (random-seed phrases are allowed)."""
    text = re.sub(r"\s+", " ", text)
    allowed = [m.span() for m in RANDOM_SEED_PHRASES.finditer(text)]
    return [m.group(0) for m in ORIGINAL_AS_SEED.finditer(text)
            if not any(a <= m.start() and m.end() <= b for a, b in allowed)]


def history(text: str) -> list[str]:
    """The phrases of ``text`` that tell the project's development history."""
    return [m.group(0) for m in HISTORY.finditer(re.sub(r"\s+", " ", text))]


def _offences(kind: str) -> list[str]:
    found = []
    for path in _files(kind):
        for line, text in _read(path):
            for phrase in seed_for_original(text):
                found.append(f"{path.relative_to(ROOT)}:{line}: {phrase!r} (say 'the original' or its repository)")
            for phrase in history(text):
                found.append(f"{path.relative_to(ROOT)}:{line}: {phrase!r} (say what is, not how it came to be)")
    return found


@pytest.mark.parametrize("kind", ["library", "recipes", "docs", "notebooks"])
def test_student_facing_words_call_the_original_code_the_original_and_tell_no_history(kind):
    found = _offences(kind)
    assert not found, f"{len(found)} phrase(s) a student should not meet:\n" + "\n".join(found)


@pytest.mark.parametrize("phrase", [
    "the seed's loop", "as in the seed", "the seeds' policy", "the seed code base", "the seed README",
    "every experiment of the seed READMEs", "The seeds save checkpoints", "All seeds score the same way",
    "the seed papers' numbers", "as every seed does", "the base lr of the DeepLab segmentation seeds",
    "(the seeds: B = 1, so N)", "the seed reads all 24,966 images"])
def test_the_original_called_the_seed_is_caught(phrase):
    assert seed_for_original(phrase), phrase


@pytest.mark.parametrize("phrase", [
    "seeds 0-4", "the seeds 0, 1, 2", "mean over the seeds", "the same seed every round", "the seeds found",
    "the seeds you pick", "the seeds of one experiment share it", "the seed then drives the augmentation",
    "each seed's standard source model", "on every seed's sign", "that seed's four runs", "seed=0",
    "the seed of the source model", "a random seed", "over the three seeds", "the seeds on which it is ahead",
    "MinEnt's normalisation \"seed\"", "so the 'seed' loss is log(C) / C", "the other seeds' standard runs",
    "from the seed's standard source model"])
def test_a_random_seed_is_allowed(phrase):
    assert not seed_for_original(phrase), phrase


@pytest.mark.parametrize("phrase", [
    "in generator version 1 they were thinner", "Version 1's composite", "while tuning the presets",
    "notebook 06's time budget", "within their 90 s budgets", "no GPU was available to this project yet"])
def test_development_history_is_caught(phrase):
    assert history(phrase), phrase


def test_docstrings_comments_and_messages_are_all_read():
    words = " ".join(text for _, text in _python_words(ROOT / "udalib" / "methods" / "minent.py"))
    assert "softCrossEntropy" in words  # a comment
    assert "The constant the entropy is divided by" in words  # a docstring


# MinEnt's entropy normalisation written "seed" (the library reads it, as stored run configs hold it): a student
# writes "original"
SEED_NORMALISATION = re.compile(
    r"""(?:log_c|normali[sz]|entropy_loss)[^\n]{0,60}[`"']seed[`"']"""  # entropy_loss(x, "seed"), normalization="seed"
    r"""|[`"']seed[`"'](?=[^\n]{0,80}(?:log_c|normali[sz]|entropy|loss)|[^\n]*\n[^\n]*log_c)""",  # ("seed", "log_c")
    re.IGNORECASE)


@pytest.mark.parametrize("kind", ["docs", "notebooks"])
def test_the_entropy_normalisation_is_written_original(kind):
    found = []
    for path in _files(kind):
        text = path.read_text(encoding="utf-8")
        for m in SEED_NORMALISATION.finditer(text):
            n = text.count("\n", 0, m.end())
            found.append(f"{path.relative_to(ROOT)}:{n + 1}: {text.splitlines()[n].strip()}")
    assert not found, "write MinEnt's normalisation \"original\", not \"seed\":\n" + "\n".join(found)
