"""MiniCity -- the procedurally generated street-scene benchmark that every notebook runs on.

MiniCity mirrors the real benchmarks at toy size, in the same label space and the same on-disk layout:

============  ====================================================  ==============================
domain        plays the part of                                     labels on disk
============  ====================================================  ==============================
``source``    GTA5 / SYNTHIA: a clean, *synthetic-looking* render   ``train`` and ``val``
``target``    Cityscapes: a *photo-like* render of the same world   ``val`` (evaluation) and
                                                                    ``oracle`` (oracle baseline only)
``rome`` ...  NTHU CrossCity: four target cities, each with its     ``val``
              own light, haze and colour cast
============  ====================================================  ==============================

Labels are Cityscapes train ids (:data:`MINICITY_TRAINIDS`, a subset of the 19 classes in the same ids), so
the models, losses and metrics of the real pipeline run unchanged. Target ``train`` images carry no labels:
adaptation can only see pixels. The separate ``oracle`` split (disjoint images) exists only so that the
target-supervised upper bound can be trained; no adaptation method reads it.

**What the shift is, and why.** Every domain draws its *layout* from one distribution (horizon, road
perspective, building blocks, trees, poles with signs, people, cars; :func:`sample_layout`), so
``p(y)`` and the scene geometry are shared: the shift is a pure *appearance* (covariate) shift, the
assumption every method here makes. The appearance (:class:`Look`) differs in four designed ways:

1. **Palette.** Each class has other colours in the target (overcast pale sky instead of blue, grey
   concrete instead of brick and beige, olive foliage, muted cars and clothes). Several target colours
   land near *another* class's source colour, so a source model's colour cues point the wrong way.
2. **Texture and noise.** The source is flat-shaded; the target has per-class texture (foliage, facades,
   asphalt), sensor noise and a slight blur, which the source model has never seen.
3. **Exposure.** A warmer colour cast, a darker exposure range and a tone curve: another camera, first-order
   statistics that re-estimating BatchNorm statistics on target images (AdaBN) can undo.
4. **Shadows** under cars (with the texture).

Because the geometry is shared and the classes remain separable by shape and context, a model can be
right on the target without target labels: this is the gap that entropy minimisation, adversarial
alignment and self-training are meant to close. Item 3 alone is what AdaBN fixes, which is why every
MiniCity table reports AdaBN beside each method. The four cities add their own light, streets and materials to
the target (:data:`CITY_ANALOGUES`): Rome's grey-paved sidewalks and crowds, Rio's greenery, Tokyo's dusk traffic,
Taipei's haze, traffic and higher camera.

Every class is drawn at a size that a stride-8 model resolves at 64 x 128 (poles 5 to 11 pixels wide, signs 6 to
19 pixels across): drawn thinner than one cell of the output grid (poles 2 pixels wide, signs 3 across), not even
the oracle learns them (0.0 and 0.6 IoU, ``benchmarks/RESULTS.md``).

**Named shift factors.** The target is composed of named factors (:data:`SHIFT_FACTORS`), each a change of
the source's :class:`Look` or :class:`Scene` with the real-world shift it plays: ``photometry`` (another camera and
haze: desaturation, gamma, cast and haze), ``palette`` (item 1), ``texture`` (item 2), ``exposure_mild``
(item 3) and ``exposure`` (a stronger one), ``graded`` (the palette and texture shift varies from image to image,
from none to full), ``prior`` (denser traffic and crowds: a label-prior shift), ``camera`` (a higher horizon) and
``converge`` (sidewalk paved like the road, dull foliage). ``minicity:target`` is
``exposure_mild + palette + texture`` (:data:`TARGET_FACTORS`); the composite with ``photometry`` in place of
``exposure_mild`` is ``minicity:target-photometry+palette+texture`` (:data:`V1_TARGET_FACTORS`).
Any mix is a domain of its own, ``minicity:target-<factor>[+<factor>...]`` (e.g.
``minicity:target-palette+graded``), generated on first use with the target's splits. Such a domain shares the
target's streets image for image unless a factor changes the scene, so one factor can be seen, and measured,
alone (``benchmarks/minicity_design_study.py``).

Generation is deterministic: image ``i`` of split ``s`` of domain ``d`` depends only on
``(seed, d, s, i)``, so any image can be regenerated on its own and the data are the same on any machine.
Taught in ``notebooks/00_domains_and_the_gap.ipynb``.
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from .. import paths
from .labels import CITIES, CITYSCAPES_CLASSES

GENERATOR_VERSION = 2

# pole half-width and sign half-size in pixels: max(minimum, fraction * apparent size)
POLE_HALF_WIDTH = (2.4, 0.09)
SIGN_HALF_SIZE = (3.0, 0.15)

# Cityscapes train ids used by MiniCity (all but `pole` are also in the 13-class CrossCity set).
ROAD, SIDEWALK, BUILDING, POLE, SIGN, VEGETATION, SKY, PERSON, CAR = 0, 1, 2, 5, 7, 8, 10, 11, 13
MINICITY_TRAINIDS = (ROAD, SIDEWALK, BUILDING, POLE, SIGN, VEGETATION, SKY, PERSON, CAR)

# detail codes of the layout's `part` map (appearance only; labels are unaffected)
BODY, WINDOW, LANE, SHADOW = 0, 1, 2, 3

DOMAINS = ("source", "target", *CITIES)


# --------------------------------------------------------------------------------------- layout
@dataclass
class Layout:
    """The geometry of one scene: what is where, independent of how it looks."""

    label: np.ndarray  # (H, W) uint8 train ids
    obj: np.ndarray  # (H, W) int32 object id; objects[k] is the class of object k
    part: np.ndarray  # (H, W) uint8 BODY / WINDOW / LANE / SHADOW
    objects: list[int]
    horizon: int


@dataclass(frozen=True)
class Scene:
    """What a domain's streets contain: the camera's horizon range and how many things of each kind (Poisson
    rates). Changing it shifts the label prior ``p(y)`` and the geometry, which no appearance statistic shows."""

    horizon: tuple[float, float] = (0.36, 0.50)  # horizon row as a fraction of the height (camera pitch and height)
    trees: float = 2.5
    poles: float = 2.0
    people: float = 2.0
    cars: float = 2.5


def sample_layout(rng: np.random.Generator, height: int = 64, width: int = 128, scene: Scene | None = None) -> Layout:
    """Draw one street scene. All sizes scale with the image, so any resolution works."""
    scene = scene or Scene()
    H, W = height, width
    Y, X = np.mgrid[0:H, 0:W].astype(np.float32)
    label = np.full((H, W), SKY, np.uint8)
    obj = np.zeros((H, W), np.int32)
    part = np.zeros((H, W), np.uint8)
    objects = [SKY]

    def paint(mask, cls, detail=None):
        objects.append(cls)
        label[mask] = cls
        obj[mask] = len(objects) - 1
        part[mask] = BODY
        if detail is not None:
            part[mask & detail] = WINDOW

    hz = int(H * rng.uniform(*scene.horizon))  # horizon row
    vx = W * rng.uniform(0.40, 0.60)  # vanishing point
    depth = np.clip((Y - hz) / max(H - hz, 1), 0, None)  # 0 at the horizon, 1 at the bottom row

    # building blocks: a skyline above the horizon, facades down to the street below it
    x0 = -rng.uniform(0, 0.1) * W
    while x0 < W:
        bw = W * rng.uniform(0.07, 0.2)
        side = abs((x0 + bw / 2) - vx) / W  # blocks near the image sides look taller
        top = hz - H * (rng.uniform(0.05, 0.22) + 0.45 * side)
        block = (X >= x0) & (X < x0 + bw) & (Y >= top)
        px, py = rng.uniform(4, 7) * W / 128, rng.uniform(5, 8) * H / 64
        windows = ((X - x0) % px < 0.5 * px) & ((Y - top) % py > 0.45 * py) & (Y < hz + 0.15 * H)
        paint(block, BUILDING, windows)
        x0 += bw

    # road and sidewalks: perspective wedges from the vanishing point
    road_l = vx - 0.02 * W + (W * rng.uniform(-0.35, 0.15) - vx) * depth
    road_r = vx + 0.02 * W + (W * rng.uniform(0.85, 1.35) - vx) * depth
    walk_l = road_l - W * rng.uniform(0.25, 0.6) * depth
    walk_r = road_r + W * rng.uniform(0.25, 0.6) * depth
    below = Y >= hz
    paint(below & (X >= walk_l) & (X <= walk_r), SIDEWALK)
    road = below & (X >= road_l) & (X <= road_r)
    lane_x = vx + (W * rng.uniform(0.35, 0.65) - vx) * depth
    lane = road & (np.abs(X - lane_x) < 0.6 + 0.015 * W * depth) & ((Y - hz) % max(H / 10, 2) < H / 20)
    paint(road, ROAD)
    part[lane] = LANE

    # things, far to near (painter's algorithm); `t` is the depth of the thing's foot point
    things = []
    for _ in range(rng.poisson(scene.trees)):
        things.append(("tree", rng.uniform(0.1, 1.0), rng.integers(2)))
    for _ in range(rng.poisson(scene.poles)):
        things.append(("pole", rng.uniform(0.1, 1.0), rng.integers(2)))
    for _ in range(rng.poisson(scene.people)):
        things.append(("person", rng.uniform(0.15, 1.0), rng.integers(2)))
    for _ in range(rng.poisson(scene.cars)):
        things.append(("car", rng.uniform(0.1, 1.0), rng.integers(2)))
    things.sort(key=lambda thing: thing[1])

    for kind, t, side in things:
        yb = hz + t * (H - hz)  # foot row
        s = H * (0.15 + 0.85 * t)  # apparent size of a unit-height thing at that depth
        row = int(min(max(yb, 0), H - 1))
        rl, rr, wl, wr = road_l[row, 0], road_r[row, 0], walk_l[row, 0], walk_r[row, 0]
        if kind == "car":
            cx = rng.uniform(rl, rr)
            h = 0.3 * s * rng.uniform(0.8, 1.2)
            w = h * rng.uniform(1.5, 2.2)
            body = (np.abs(X - cx) < w / 2) & (Y <= yb) & (Y > yb - h)
            glass = (Y < yb - 0.55 * h) & (np.abs(X - cx) < 0.35 * w)
            roof = (Y > yb - h) & (Y <= yb - 0.55 * h) & (np.abs(X - cx) >= 0.38 * w)
            body &= ~roof
            part[(np.abs(X - cx) < w / 2) & (Y > yb) & (Y <= yb + 0.12 * h) & (label == ROAD)] = SHADOW
            paint(body, CAR, glass)
            continue
        # sidewalk things stand on the left or the right sidewalk
        cx = rng.uniform(wl, rl) if side == 0 else rng.uniform(rr, wr)
        if kind == "tree":
            r = 0.28 * s * rng.uniform(0.7, 1.3)
            trunk_h = 0.35 * s
            trunk = (np.abs(X - cx) < max(0.6, 0.03 * s)) & (Y <= yb) & (Y > yb - trunk_h)
            crown = (X - cx) ** 2 + ((Y - (yb - trunk_h - 0.7 * r)) * 1.2) ** 2 < r**2
            paint(trunk | crown, VEGETATION)
        elif kind == "pole":
            # poles and signs are drawn at a size that a stride-8 model resolves at 64 x 128 (a pole 5 to 11 pixels
            # wide, a sign 6 to 19 pixels across): thinner ones fall below the output grid, and not even the
            # oracle learns them (2-pixel poles and 3-pixel signs: 0.0 and 0.6 IoU)
            h = 0.85 * s
            paint((np.abs(X - cx) < max(POLE_HALF_WIDTH[0], POLE_HALF_WIDTH[1] * s)) & (Y <= yb) & (Y > yb - h), POLE)
            if rng.random() < 0.85:
                a = max(SIGN_HALF_SIZE[0], SIGN_HALF_SIZE[1] * s)
                paint((np.abs(X - cx) < a) & (Y > yb - h - a) & (Y <= yb - h + a), SIGN)
        else:  # person
            h = 0.6 * s * rng.uniform(0.85, 1.15)
            body = ((X - cx) / (0.2 * h)) ** 2 + ((Y - (yb - 0.42 * h)) / (0.42 * h)) ** 2 < 1
            head = (X - cx) ** 2 + (Y - (yb - 0.9 * h)) ** 2 < (0.1 * h) ** 2
            paint(body | head, PERSON)
    return Layout(label, obj, part, objects, hz)


# ------------------------------------------------------------------------------------ appearance
RGB = tuple[float, float, float]


@dataclass(frozen=True)
class Look:
    """How a domain renders a layout. Every field is one designed ingredient of the shift."""

    name: str
    palette: dict[int, tuple[RGB, ...]]  # per class, the colours objects are drawn from
    sky_top: RGB = (0.35, 0.55, 0.95)  # sky colour at the top row (gradient to palette[SKY] at the horizon)
    color_jitter: float = 0.04  # per-object colour noise (std)
    texture: float = 0.0  # amplitude of per-class value-noise texture
    noise: float = 0.0  # per-pixel sensor noise (std)
    blur: float = 0.0  # Gaussian blur radius in pixels at 64 rows
    saturation: float = 1.0  # 1 keeps colours, 0 is grey
    gamma: float = 1.0
    gain: RGB = (1.0, 1.0, 1.0)  # colour cast
    brightness: tuple[float, float] = (0.9, 1.1)  # per-image exposure range
    haze: float = 0.0  # blend toward haze_color at the horizon
    haze_color: RGB = (0.8, 0.8, 0.8)
    shadow: float = 1.0  # brightness under cars (1 = no shadow)
    window: float = 0.55  # brightness of windows and car glass
    lane: RGB = (0.95, 0.95, 0.95)
    # per-image strength of the palette and texture shift, drawn uniformly from this range: 1 renders the look's
    # own colours and texture, 0 the source's, in between a blend (weather, light and wear vary image to image)
    strength: tuple[float, float] = (1.0, 1.0)


# how strongly each class is textured (foliage most, sky least)
TEXTURE_WEIGHT = {ROAD: 0.6, SIDEWALK: 0.5, BUILDING: 0.7, POLE: 0.2, SIGN: 0.1, VEGETATION: 1.0,
                  SKY: 0.15, PERSON: 0.4, CAR: 0.3}

SOURCE_LOOK = Look(
    name="source",
    palette={
        ROAD: ((0.30, 0.30, 0.33), (0.36, 0.34, 0.34)),
        SIDEWALK: ((0.72, 0.62, 0.55), (0.65, 0.60, 0.62)),
        BUILDING: ((0.72, 0.40, 0.30), (0.80, 0.72, 0.52), (0.55, 0.55, 0.68)),
        POLE: ((0.25, 0.25, 0.28),),
        SIGN: ((0.95, 0.80, 0.10), (0.15, 0.30, 0.85)),
        VEGETATION: ((0.18, 0.62, 0.18), (0.30, 0.70, 0.20)),
        SKY: ((0.70, 0.85, 1.00),),
        PERSON: ((0.85, 0.15, 0.15), (0.20, 0.20, 0.75), (0.95, 0.85, 0.15)),
        CAR: ((0.85, 0.10, 0.10), (0.10, 0.30, 0.85), (0.92, 0.92, 0.92), (0.10, 0.10, 0.12)),
    },
)
SOURCE_SCENE = Scene()

# the photo-like world's colours: several land near *another* class's source colour
TARGET_PALETTE = {
    ROAD: ((0.50, 0.48, 0.50), (0.44, 0.44, 0.47)),
    SIDEWALK: ((0.60, 0.58, 0.62), (0.55, 0.54, 0.60)),  # close to the source road and building-3
    BUILDING: ((0.62, 0.60, 0.58), (0.55, 0.47, 0.42), (0.70, 0.68, 0.62)),  # concrete: near source sidewalk
    POLE: ((0.40, 0.40, 0.38),),
    SIGN: ((0.92, 0.92, 0.92), (0.20, 0.35, 0.75)),
    VEGETATION: ((0.38, 0.45, 0.18), (0.30, 0.38, 0.22)),  # olive
    SKY: ((0.86, 0.88, 0.90),),  # overcast: pale, almost white
    PERSON: ((0.22, 0.22, 0.28), (0.45, 0.32, 0.26), (0.60, 0.20, 0.20)),
    CAR: ((0.32, 0.32, 0.36), (0.62, 0.62, 0.65), (0.15, 0.20, 0.32), (0.55, 0.15, 0.12)),
}


@dataclass(frozen=True)
class ShiftFactor:
    """One named ingredient of the domain shift: changes to the source's look and scene, and what it stands for."""

    look: dict
    scene: dict
    analogue: str  # the real-world shift it plays


SHIFT_FACTORS: dict[str, ShiftFactor] = {
    # first-order colour statistics: what re-estimating BatchNorm statistics (AdaBN) can undo
    "photometry": ShiftFactor(
        {"saturation": 0.75, "gamma": 1.15, "gain": (1.0, 1.0, 1.02), "brightness": (0.8, 1.15), "haze": 0.15},
        {}, "another camera: white balance, tone curve, exposure, haze"),
    # per-class colours: materials and paints of another world, many near another class's source colour
    "palette": ShiftFactor({"palette": TARGET_PALETTE, "sky_top": (0.78, 0.82, 0.88), "color_jitter": 0.05},
                           {}, "game assets vs real materials: grey concrete, olive foliage, muted cars"),
    # texture, noise and optics: high-frequency content the source model never saw
    "texture": ShiftFactor({"texture": 0.35, "noise": 0.035, "blur": 0.6, "shadow": 0.6},
                           {}, "real surfaces and sensors: foliage, facades, asphalt, noise, blur, shadows"),
    # colour cast, exposure and tone curve alone: per-channel statistics that BatchNorm re-estimation absorbs,
    # without the desaturation and haze of `photometry`, which remove colour contrast no statistic brings back
    "exposure": ShiftFactor({"gain": (1.10, 1.0, 0.86), "brightness": (0.65, 1.0), "gamma": 1.1},
                            {}, "another camera: warmer white balance, darker exposure"),
    "exposure_mild": ShiftFactor({"gain": (1.05, 1.0, 0.93), "brightness": (0.8, 1.05), "gamma": 1.05},
                                 {}, "another camera, closer to the source's"),
    # the palette and texture shift varies from image to image, from none to full: one set of BatchNorm
    # statistics fits no image exactly, while the source-like images anchor the rest
    "graded": ShiftFactor({"strength": (0.0, 1.0)}, {}, "weather, light and wear that change image to image"),
    # label prior: denser traffic and crowds, fewer trees (BatchNorm statistics then follow the classes' mix)
    "prior": ShiftFactor({}, {"cars": 4.5, "people": 4.0, "trees": 1.5}, "a busier city: traffic and crowds"),
    # a higher camera pitched down: the horizon moves up, so the layout prior (and CBST's spatial prior) shifts
    "camera": ShiftFactor({}, {"horizon": (0.26, 0.40)}, "another car and camera mount"),
    # classes that converge in the target: sidewalk paved like the road, foliage dull like facades
    "converge": ShiftFactor({"palette": {**SOURCE_LOOK.palette,
                                         SIDEWALK: ((0.38, 0.37, 0.38), (0.42, 0.40, 0.40)),
                                         VEGETATION: ((0.45, 0.55, 0.30), (0.50, 0.58, 0.36))}},
                            {}, "asphalt sidewalks, dusty foliage: classes that look alike"),
}

# the composite target of `minicity:target`, the factors in this order. `photometry` (desaturation and haze) in
# place of `exposure_mild` removes colour contrast that neither BatchNorm statistics nor a target loss brings back;
# with `exposure_mild` every method's own term has something to add
# (benchmarks/RESULTS.md, "Candidate composites")
TARGET_FACTORS = ("exposure_mild", "palette", "texture")
V1_TARGET_FACTORS = ("photometry", "palette", "texture")  # minicity:target-photometry+palette+texture


def compose(name: str, factors: tuple[str, ...], base: tuple[Look, Scene] | None = None) -> tuple[Look, Scene]:
    """The source's look and scene with ``factors`` applied in order (later factors win on shared fields)."""
    unknown = [f for f in factors if f not in SHIFT_FACTORS]
    if unknown:
        raise ValueError(f"unknown MiniCity shift factor {', '.join(map(repr, unknown))}; "
                         f"factors: {', '.join(SHIFT_FACTORS)}")
    look, scene = base or (SOURCE_LOOK, SOURCE_SCENE)
    look_fields, scene_fields = asdict(look), asdict(scene)
    look_fields["palette"] = look.palette  # asdict would copy the tuples as lists
    for f in factors:
        look_fields.update(SHIFT_FACTORS[f].look)
        scene_fields.update(SHIFT_FACTORS[f].scene)
    look_fields["name"] = name
    return Look(**look_fields), Scene(**scene_fields)


TARGET_LOOK, TARGET_SCENE = compose("target", TARGET_FACTORS)


def _city(name: str, scene: dict, **changes) -> tuple[Look, Scene]:
    """A city: the composite target, then its own light (look) and streets (scene)."""
    look_fields = {**asdict(TARGET_LOOK), "palette": TARGET_LOOK.palette, "name": name, **changes}
    return Look(**look_fields), Scene(**{**asdict(TARGET_SCENE), **scene})


# The four cities: the composite target in a city's own light, streets and materials. Each differs from the target
# in more than photometry (CrossCity's question is what a method adds once BatchNorm statistics have absorbed the
# light): its own building materials (and Tokyo's cars), and its own streets: Rome paves its sidewalks like its roads
# and fills them with people, Rio is green, Tokyo's dusk streets are crowded with cars and people, Taipei is hazy,
# busy and seen from a taller vehicle (a higher horizon).
CITY_DOMAINS = {
    "rome": _city("rome", {"people": 3.5, "trees": 1.0}, gain=(1.12, 1.0, 0.84), gamma=1.0, haze=0.1,
                  haze_color=(0.95, 0.88, 0.75),
                  palette={**TARGET_PALETTE, SIDEWALK: ((0.47, 0.45, 0.46), (0.52, 0.49, 0.47)),
                           BUILDING: ((0.80, 0.58, 0.38), (0.86, 0.72, 0.52), (0.72, 0.46, 0.34))}),
    "rio": _city("rio", {"trees": 4.5}, saturation=1.05, gamma=1.0, sky_top=(0.40, 0.60, 0.95), haze=0.05,
                 texture=0.3, palette={**TARGET_PALETTE, SKY: ((0.70, 0.82, 0.97),),
                                       VEGETATION: ((0.20, 0.55, 0.20), (0.28, 0.60, 0.18)),
                                       BUILDING: ((0.95, 0.85, 0.55), (0.55, 0.80, 0.75), (0.90, 0.62, 0.62))}),
    "tokyo": _city("tokyo", {"cars": 4.5, "people": 4.0}, gamma=1.5, gain=(0.85, 0.92, 1.15),
                   brightness=(0.6, 0.9), noise=0.05,
                   palette={**TARGET_PALETTE, BUILDING: ((0.45, 0.50, 0.58), (0.36, 0.39, 0.44), (0.62, 0.66, 0.72)),
                            CAR: ((0.86, 0.86, 0.88), (0.74, 0.75, 0.79), (0.15, 0.15, 0.18))}),
    "taipei": _city("taipei", {"cars": 3.5, "horizon": (0.28, 0.42)}, haze=0.55, haze_color=(0.82, 0.82, 0.78),
                    saturation=0.6, blur=0.9,
                    palette={**TARGET_PALETTE, BUILDING: ((0.80, 0.80, 0.74), (0.62, 0.53, 0.45), (0.70, 0.72, 0.70))}),
}
# what each city plays (notebook 10)
CITY_ANALOGUES = {
    "rome": "a historic centre in warm evening light: ochre and terracotta plaster, cobbled sidewalks as grey as the "
            "road, crowds, few trees",
    "rio": "a tropical city in strong sun: painted facades (yellow, teal, pink), blue sky, green foliage, many trees",
    "tokyo": "a city at dusk: glass and steel towers, white and silver cars, streets dense with cars and people; "
             "dark, blue-cast, noisy images",
    "taipei": "a humid city: haze, white and brown tiled facades, dense scooter and car traffic, a camera on a taller "
              "vehicle (higher horizon)",
}
CITY_LOOKS = {name: look for name, (look, _) in CITY_DOMAINS.items()}
LOOKS = {"source": SOURCE_LOOK, "target": TARGET_LOOK, **CITY_LOOKS}
SCENES = {"source": SOURCE_SCENE, "target": TARGET_SCENE, **{n: s for n, (_, s) in CITY_DOMAINS.items()}}


def factor_domain(factors: str | tuple[str, ...]) -> str:
    """The domain name of the source world with only ``factors``: ``factor_domain("palette")`` is
    ``"target-palette"``, ``factor_domain(("palette", "graded"))`` is ``"target-palette+graded"``."""
    factors = (factors,) if isinstance(factors, str) else tuple(factors)
    compose("check", factors)
    return "target-" + "+".join(factors)


def domain_definition(domain: str) -> tuple[Look, Scene]:
    """The look and scene of a domain: ``source``, ``target``, a city, or ``target-<factor>[+<factor>...]``
    (the source world with only those shift factors, e.g. ``target-palette+texture``)."""
    if domain in LOOKS:
        return LOOKS[domain], SCENES[domain]
    if domain.startswith("target-") and domain != "target-":
        return compose(domain, tuple(domain[len("target-"):].split("+")))
    names = ", ".join("minicity:" + d for d in DOMAINS)
    raise ValueError(f"unknown MiniCity domain {domain!r}; choose one of {names}, "
                     f"or minicity:target-<factor>[+<factor>...] with factors {', '.join(SHIFT_FACTORS)}")


def _value_noise(rng: np.random.Generator, height: int, width: int, cells: int = 8) -> np.ndarray:
    """Smooth noise in [-1, 1]: a coarse random grid upsampled bilinearly, plus a finer octave."""
    out = np.zeros((height, width), np.float32)
    for scale, amp in ((cells, 0.6), (cells * 3, 0.4)):
        grid = rng.uniform(-1, 1, (max(height // scale, 2), max(width // scale, 2))).astype(np.float32)
        img = Image.fromarray(grid, mode="F").resize((width, height), Image.BILINEAR)
        out += amp * np.asarray(img)
    return out


def render(layout: Layout, look: Look, rng: np.random.Generator) -> np.ndarray:
    """Paint a layout in a domain's look. Returns an ``(H, W, 3)`` uint8 RGB image."""
    H, W = layout.label.shape
    graded = tuple(look.strength) != (1.0, 1.0)
    t = rng.uniform(*look.strength) if graded else 1.0  # this image's strength of the palette and texture shift
    colors = np.zeros((len(layout.objects), 3), np.float32)
    for k, cls in enumerate(layout.objects):
        own = look.palette[cls]
        color = np.asarray(own[rng.integers(len(own))])
        if graded:  # blend with a source colour of the class
            base = SOURCE_LOOK.palette[cls]
            src = np.asarray(base[rng.integers(len(base))])
            color = src + t * (color - src)
        colors[k] = color + rng.normal(0, look.color_jitter, 3)
    img = colors[layout.obj]

    sky = layout.label == SKY  # vertical gradient from sky_top to the horizon colour
    ramp = np.clip(np.arange(H, dtype=np.float32) / max(layout.horizon, 1), 0, 1)[:, None, None]
    blend = lambda mine, src: np.asarray(src) + t * (np.asarray(mine) - np.asarray(src)) if graded else np.asarray(mine)
    sky_top = blend(look.sky_top, SOURCE_LOOK.sky_top)
    gradient = sky_top * (1 - ramp) + blend(look.palette[SKY][0], SOURCE_LOOK.palette[SKY][0]) * ramp
    img = np.where(sky[..., None], np.broadcast_to(gradient, img.shape), img)

    img[layout.part == WINDOW] *= look.window
    img[layout.part == LANE] = look.lane
    img[layout.part == SHADOW] *= look.shadow

    if look.texture:
        weight = np.zeros(256, np.float32)
        for cls, w in TEXTURE_WEIGHT.items():
            weight[cls] = w
        img *= (1 + (t * look.texture if graded else look.texture) * weight[layout.label]
                * _value_noise(rng, H, W))[..., None]

    img = img * np.asarray(look.gain, np.float32) * rng.uniform(*look.brightness)
    gray = img.mean(axis=2, keepdims=True)
    img = gray + look.saturation * (img - gray)
    if look.haze:
        dist = np.exp(-np.abs(np.arange(H, dtype=np.float32) - layout.horizon) / (0.25 * H))[:, None, None]
        img = img * (1 - look.haze * dist) + np.asarray(look.haze_color) * look.haze * dist
    img = np.clip(img, 0, 1) ** look.gamma
    out = Image.fromarray((img * 255).round().astype(np.uint8))
    if look.blur:
        out = out.filter(ImageFilter.GaussianBlur(look.blur * H / 64))
    img = np.asarray(out, np.float32) / 255
    if look.noise:
        img = img + rng.normal(0, look.noise, img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def make_sample(domain: str, split: str, index: int, seed: int = 0, height: int = 64, width: int = 128):
    """Image ``index`` of ``domain``/``split``: ``(image (H,W,3) uint8, label (H,W) uint8)``.

    The layout's random stream depends on ``(seed, split, index)`` and on the world: the source's is drawn
    independently of the target's. The target and its single-factor variants (``target-<factor>``) share their
    streams, so image ``i`` of each is the same street under another shift (where the factor keeps the scene).
    """
    look, scene = domain_definition(domain)
    world = "source" if domain == "source" else "target"
    key = "target" if domain.startswith("target") else domain
    split_id = zlib.crc32(f"{world}/{key}/{split}".encode())
    layout = sample_layout(np.random.default_rng([seed, split_id, index, 0]), height, width, scene)
    image = render(layout, look, np.random.default_rng([seed, split_id, index, 1]))
    return image, layout.label


# ---------------------------------------------------------------------------------------- on disk
@dataclass(frozen=True)
class MiniCitySpec:
    """Sizes of a MiniCity build. The defaults are what the notebooks use."""

    seed: int = 0
    height: int = 64
    width: int = 128
    splits: dict[str, dict[str, int]] = field(default_factory=lambda: {
        "source": {"train": 600, "val": 100},
        "target": {"train": 600, "val": 150, "oracle": 600},
        **{city: {"train": 240, "val": 100} for city in CITIES},
    })

    @property
    def name(self) -> str:
        total = sum(sum(s.values()) for s in self.splits.values())
        extra = "".join(f"-{d}" for d in sorted(self.splits) if d not in DOMAINS)  # single-factor builds
        return f"minicity-v{GENERATOR_VERSION}-s{self.seed}-{self.height}x{self.width}-n{total}{extra}"


FACTOR_SPLITS = {"train": 600, "val": 150, "oracle": 600}  # a `target-<factor>` domain: the target's splits


def spec_for(domain: str, seed: int = 0) -> MiniCitySpec:
    """The build that holds ``domain``: the default one, or (for ``target-<factor>...``) a build of its own,
    generated on first use beside the default one."""
    domain_definition(domain)  # a clear error for unknown names
    if domain in DOMAINS:
        return MiniCitySpec(seed=seed)
    return MiniCitySpec(seed=seed, splits={domain: dict(FACTOR_SPLITS)})


def labelled(domain: str, split: str) -> bool:
    """Which splits carry labels on disk: all source splits; only val/oracle in the target domains."""
    return domain == "source" or split in ("val", "oracle")


def _write_one(args) -> None:
    root, domain, split, index, spec = args
    image, label = make_sample(domain, split, index, spec.seed, spec.height, spec.width)
    name = f"{split}_{index:05d}.png"
    Image.fromarray(image).save(root / domain / "images" / name)
    if labelled(domain, split):
        Image.fromarray(label).save(root / domain / "labels" / name)


def _list_lines(spec: MiniCitySpec) -> dict[str, list[str]]:
    """``{"<domain>_<split>.txt": ["<domain>/images/<name> [<domain>/labels/<name>]", ...]}``."""
    lists = {}
    for domain, splits in spec.splits.items():
        for split, n in splits.items():
            lines = []
            for i in range(n):
                name = f"{split}_{i:05d}.png"
                line = f"{domain}/images/{name}"
                if labelled(domain, split):
                    line += f" {domain}/labels/{name}"
                lines.append(line)
            lists[f"{domain}_{split}.txt"] = lines
    return lists


def verify(root: str | os.PathLike, spec: MiniCitySpec) -> None:
    """Open every image and label of the build in ``root``: sizes, modes and label ids (MiniCity's train ids and
    255). Raises ``ValueError`` naming the first bad file; the build is marked complete only after this."""
    root = Path(root)
    allowed = np.zeros(256, bool)
    allowed[list(MINICITY_TRAINIDS) + [255]] = True
    for lines in _list_lines(spec).values():
        for line in lines:
            for k, rel in enumerate(line.split()):
                path = root / rel
                try:
                    with Image.open(path) as im:
                        im.load()
                        size, mode, arr = im.size, im.mode, np.asarray(im) if k else None
                except (OSError, SyntaxError) as exc:
                    raise ValueError(f"MiniCity file {path} is missing or unreadable ({exc}); generate again "
                                     "(python -m udalib minicity --overwrite)") from None
                if size != (spec.width, spec.height) or mode != ("L" if k else "RGB"):
                    raise ValueError(f"MiniCity file {path} is {size[0]}x{size[1]} {mode}, not "
                                     f"{spec.width}x{spec.height} {'L' if k else 'RGB'}; generate again "
                                     "(python -m udalib minicity --overwrite)")
                if k and not allowed[arr].all():
                    raise ValueError(f"MiniCity label {path} holds ids outside {list(MINICITY_TRAINIDS)} and 255; "
                                     "generate again (python -m udalib minicity --overwrite)")


def _check_counts(root: Path) -> None:
    """A finished build about to be reused: every file its lists name is there (a cheap check of names)."""
    missing = [rel for lst in sorted((root / "lists").glob("*.txt")) for line in lst.read_text().splitlines()
               for rel in line.split() if not (root / rel).is_file()]
    if missing:
        raise ValueError(f"MiniCity build {root} is marked complete but {len(missing)} listed files are missing "
                         f"(first: {missing[0]}): regenerate it with `python -m udalib minicity --overwrite`"
                         + (f" --root {root}" if root.parent != paths.data_dir() else ""))


def generate(root: str | os.PathLike | None = None, spec: MiniCitySpec | None = None, *,
             workers: int | None = None, overwrite: bool = False, wait: float = 1800) -> Path:
    """Write MiniCity to ``root`` (default ``data/<spec.name>``) and return that folder.

    The layout is the one real datasets get from ``data_scripts/``: ``<domain>/images/*.png``,
    ``<domain>/labels/*.png`` (train ids, 255 = ignore) and ``lists/<domain>_<split>.txt`` whose lines are
    ``image [label]`` relative to the root. A finished build (``meta.json`` present) is reused unless
    ``overwrite``; an unfinished one is built in a temporary folder, every file is opened and checked
    (:func:`verify`), and only then is ``meta.json`` written and the folder moved into place, so an interrupted
    run never leaves a half-written dataset behind. Builds are locked (``.<name>.lock`` beside the folder): a
    second process waits up to ``wait`` seconds for the first and then reuses its build.
    """
    import logging

    from .. import locks

    spec = spec or MiniCitySpec()
    root = Path(root) if root is not None else paths.data_dir() / spec.name
    if (root / "meta.json").exists() and not overwrite:
        _check_counts(root)
        return root

    def refuse_foreign() -> None:
        if root.exists() and any(root.iterdir()) and not (root / "meta.json").exists():
            raise FileExistsError(f"{root} exists and is not a MiniCity folder (no meta.json): choose an empty or "
                                  "new folder; nothing was written")

    refuse_foreign()

    def waiting(owner: str) -> None:
        logging.getLogger(__name__).warning("waiting for %s, which is generating MiniCity in %s", owner, root)

    root.parent.mkdir(parents=True, exist_ok=True)
    with locks.hold(root.with_name(f".{root.name}.lock"), what=f"MiniCity build {root}", wait=wait,
                    on_wait=waiting, hint="wait for it, or generate into another folder"):
        if (root / "meta.json").exists() and not overwrite:  # the process we waited for built it
            _check_counts(root)
            return root
        refuse_foreign()
        tmp = root.with_name(root.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)  # a killed build's leftovers: we hold the lock, nobody writes there
        jobs = []
        for domain, splits in spec.splits.items():
            (tmp / domain / "images").mkdir(parents=True, exist_ok=True)
            (tmp / domain / "labels").mkdir(parents=True, exist_ok=True)
            for split, n in splits.items():
                jobs += [(tmp, domain, split, i, spec) for i in range(n)]
        workers = workers if workers is not None else min(2, os.cpu_count() or 1)
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                list(pool.map(_write_one, jobs, chunksize=64))
        else:
            for job in jobs:
                _write_one(job)
        (tmp / "lists").mkdir(exist_ok=True)
        for name, lines in _list_lines(spec).items():
            (tmp / "lists" / name).write_text("\n".join(lines) + "\n")
        verify(tmp, spec)  # every file opened and checked before the build is marked complete
        meta = {"generator_version": GENERATOR_VERSION, "spec": asdict(spec), "train_ids": list(MINICITY_TRAINIDS),
                "classes": [CITYSCAPES_CLASSES[i] for i in MINICITY_TRAINIDS],
                "looks": {k: asdict(v) for k, v in LOOKS.items()}}
        locks.atomic_write_text(tmp / "meta.json", json.dumps(meta, indent=1, default=list))
        if root.exists() and overwrite:
            shutil.rmtree(root)
        elif root.exists():
            root.rmdir()  # an empty folder (refuse_foreign let it through)
        tmp.rename(root)
    return root
