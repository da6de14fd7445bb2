"""The synthetic landmark world: procedurally drawn landmarks in exact GLDv2 format (DESIGN section 8).

The paper studies what a CLIP vision encoder knows about GLDv2 landmarks (section 3.1) and how an
LLM that can *describe* a landmark in text may still fail to recognise it in an image (section 2,
Figure 1). This module builds a small, seeded stand-in for GLDv2 on which the whole toolkit runs
on a laptop CPU:

* a dozen categories (tower, church, bridge, ...), each with its own PIL drawing;
* per landmark a unique combination of category x main colour x material texture x distinctive
  feature x accent colour, plus a unique fictional place ("Town, Country") and a name built from
  syllables ("Karvel Tower", "Holy Trinity Church (Ostrava)");
* its entities name the visible attributes ("red brick facade", "twin spires", "blue roof");
* GLDv2's long tail of images per landmark (lognormal, many landmarks with <= 5 images);
* per image: position, scale, light, shear, flip, noise and occlusion; a share of deliberately
  ambiguous views (heavy crop, fog, darkness) that ``train_clean.csv`` leaves out, as GLDv2's
  cleaning removes noisy images.

Files written under ``out`` (the contract other stages read):

* ``train.csv`` (id,url,landmark_id), ``train_label_to_category.csv`` (landmark_id,category),
  ``train_label_to_hierarchical.csv`` (landmark_id,category,supercategory,hierarchical_label,
  natural_or_human_made), ``train_clean.csv`` (landmark_id,images) and the images at
  ``train/a/b/c/<id>.jpg``; the category is a Wikimedia url whose title is the name with spaces
  as underscores, percent-encoded where needed.
* ``truth/landmarks.jsonl``: landmark_id, name, hierarchical_label, place, entities, description,
  aliases, clip_seen (whether the stand-in CLIP is shown the landmark in training; a seeded
  ``clip_seen_fraction`` of the landmarks).
* ``truth/images.jsonl``: id, landmark_id, view (normal/crop/fog/dark), clip_split (train: the
  stand-in CLIP trains on it; heldout: a seen landmark's image kept out of CLIP training;
  unseen: an image of a landmark the CLIP never sees), heldout (the same seeded share of every
  landmark's images, seen or not, kept out of every training set of the testbed -- the CLIP's and
  the generic stage-1/2 corpus -- for the skyline control; for a seen landmark it equals
  ``clip_split == "heldout"``).
* ``truth/world.json``: the configuration and counts.

Same seed and configuration give the same bytes in every file. Every image is drawn from its own
random stream (seeded by world seed, landmark id and image index), so a rerun after a kill
rewrites identical files; the csvs and ``truth/`` are written last, atomically.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from eeca.config import from_dict, load_config, to_dict
from eeca.gldv2.paths import image_path
from eeca.io import atomic_write, read_jsonl, run_lock, write_json
from eeca.synth.config import SynthConfig, WorldConfig

CATEGORY_URL_PREFIX = "http://commons.wikimedia.org/wiki/Category:"

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (190, 40, 35), "blue": (40, 70, 190), "white": (235, 235, 228), "yellow": (230, 200, 40),
    "green": (40, 140, 60), "grey": (125, 125, 128), "black": (30, 30, 34), "orange": (235, 125, 30),
    "purple": (120, 50, 150), "brown": (120, 75, 40),
}

# material -> texture drawn over the main body (see _texture)
MATERIALS_BUILT = ("brick", "stone", "glass", "wood", "marble", "bronze")
MATERIALS_NATURAL = ("rocky", "grassy", "sandy", "icy")


@dataclass(frozen=True)
class Category:
    """One landmark category: how it is named, which attributes it takes, how it is labelled."""

    name: str
    supercategory: str
    natural: bool
    materials: tuple[str, ...]
    features: tuple[str, ...]
    part: str  # the body the colour and material describe ("red brick facade")
    accent_part: str  # the second colour's part ("blue roof")
    name_patterns: tuple[str, ...]  # {p} proper word, {t} town, {d} dedication, {r} title


CATEGORIES: tuple[Category, ...] = (
    Category("tower", "building", False, ("brick", "stone", "glass", "wood", "marble"),
             ("clock face", "pointed spire", "open belfry", "flag on top"), "facade", "roof",
             ("{p} Tower", "Tower of {p}")),
    Category("church", "religious building", False, ("brick", "stone", "wood", "marble"),
             ("twin spires", "rose window", "onion dome", "arched portal"), "facade", "roof",
             ("Church of Saint {p}", "{d} Church ({t})")),
    Category("bridge", "infrastructure", False, ("stone", "brick", "wood", "glass"),
             ("three arches", "suspension cables", "steel truss", "twin gate towers"), "deck", "railings",
             ("{p} Bridge", "Old {p} Bridge")),
    Category("castle", "fortification", False, ("stone", "brick", "marble"),
             ("round turrets", "drawbridge gate", "tall keep", "banner flags"), "walls", "turret roofs",
             ("{p} Castle", "Castle {p}")),
    Category("lighthouse", "building", False, ("brick", "stone", "wood"),
             ("spiral stripes", "light beam", "keeper's cottage", "rocky islet"), "tower", "lantern",
             ("{p} Lighthouse", "{p} Point Lighthouse")),
    Category("mountain", "mountain", True, ("rocky", "grassy", "sandy", "icy"),
             ("snow-capped peak", "twin peaks", "jagged ridge", "volcanic crater"), "slopes", "forest",
             ("Mount {p}", "{p} Peak")),
    Category("lake", "water body", True, ("rocky", "grassy", "sandy", "icy"),
             ("small island", "wooden pier", "sailboat", "reed beds"), "shore", "water",
             ("Lake {p}", "{p} Lake")),
    Category("waterfall", "water body", True, ("rocky", "grassy", "sandy", "icy"),
             ("three-tier cascade", "rainbow", "twin streams", "plunge pool"), "cliffs", "forest",
             ("{p} Falls", "{p} Waterfall")),
    Category("statue", "monument", False, ("bronze", "marble", "stone"),
             ("raised torch", "crown", "sword", "mounted rider"), "figure", "pedestal",
             ("Statue of {r} {p}", "{r} {p} Monument")),
    Category("windmill", "building", False, ("brick", "wood", "stone"),
             ("four lattice sails", "six sails", "wooden gallery", "thatched cap"), "body", "sails",
             ("{p} Windmill", "{p} Mill")),
    Category("pyramid", "monument", False, ("stone", "marble", "brick"),
             ("stepped terraces", "golden capstone", "temple on top", "twin pyramids"), "faces", "doorway",
             ("Pyramid of {p}", "Great Pyramid of {p}")),
    Category("dome", "religious building", False, ("marble", "stone", "glass", "brick"),
             ("twin minarets", "columned portico", "ribbed dome", "lantern cupola"), "walls", "dome",
             ("{p} Rotunda", "Dome of {p}")),
)
CATEGORY_BY_NAME = {c.name: c for c in CATEGORIES}

COUNTRIES = ("Veldoria", "Astrevia", "Morland", "Kessaria", "Ulvania", "Brethmoor", "Taloria",
             "Ostrevia", "Calmaris", "Drevonia", "Fenmark", "Sarvany")
DEDICATIONS = ("Holy Trinity", "Saint Mary's", "Saint Nicholas", "All Saints", "Saint Peter's")
TITLES = ("King", "Queen", "Saint", "General", "Duke")
_ONSETS = ("k", "v", "t", "r", "m", "s", "l", "b", "d", "g", "n", "p", "z", "h", "br", "st", "tr", "dr",
           "kl", "gr", "f", "sh")
_VOWELS = ("a", "e", "i", "o", "u", "ae", "ei", "ou", "y")
_ACCENTED = {"a": "á", "e": "é", "o": "ö", "u": "ü"}  # a few names need percent-encoding, as on Wikimedia
_CODAS = ("", "", "n", "r", "l", "s", "th", "v", "k", "m", "nd")


@dataclass(frozen=True)
class Landmark:
    landmark_id: int
    name: str
    category: str
    colour: str
    material: str
    feature: str
    accent: str
    place: str
    aliases: tuple[str, ...]
    clip_seen: bool

    @property
    def entities(self) -> list[str]:
        cat = CATEGORY_BY_NAME[self.category]
        return [f"{self.colour} {self.material} {cat.part}", self.feature, f"{self.accent} {cat.accent_part}"]

    @property
    def description(self) -> str:
        e = self.entities
        return f"{self.name} is a {self.category} in {self.place}. It is known for its {e[0]}, its {e[1]} and its {e[2]}."

    def truth_record(self) -> dict:
        return {"landmark_id": self.landmark_id, "name": self.name, "hierarchical_label": self.category,
                "place": self.place, "entities": self.entities, "description": self.description,
                "aliases": list(self.aliases), "clip_seen": self.clip_seen}


def category_url(name: str) -> str:
    """The Wikimedia category url of a landmark name (spaces as underscores, percent-encoded)."""
    return CATEGORY_URL_PREFIX + quote(name.replace(" ", "_"), safe="_(),'-.")


# ----------------------------------------------------------------------------------------------
# landmarks: names, places, attributes


def _word(rng: random.Random, syllables: int, accent: bool) -> str:
    parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)]
    w = "".join(parts) + rng.choice(_CODAS)
    if accent:
        idx = [i for i, ch in enumerate(w) if ch in _ACCENTED]
        if idx:
            i = rng.choice(idx)
            w = w[:i] + _ACCENTED[w[i]] + w[i + 1:]
    return w.capitalize()


def _unique_words(rng: random.Random, n: int, accent_rate: float, taken: set[str]) -> list[str]:
    """``n`` distinct syllable words, none already in ``taken`` and none a prefix of another."""
    out: list[str] = []
    while len(out) < n:
        w = _word(rng, rng.choice((2, 2, 3)), rng.random() < accent_rate)
        low = w.lower()
        # a word that is a prefix of another would let substring matching confuse two landmarks
        if len(w) < 4 or any(low.startswith(t) or t.startswith(low) for t in taken):
            continue
        taken.add(low)
        out.append(w)
    return out


def draw_landmarks(cfg: WorldConfig, seed: int) -> list[Landmark]:
    """The landmarks of a world: unique names, places and attribute combinations, seeded."""
    rng = random.Random(f"eeca-world-{seed}")
    n = cfg.landmarks
    max_combos = sum(len(c.materials) * len(c.features) for c in CATEGORIES) * len(COLOURS) * (len(COLOURS) - 1)
    if n > max_combos // 4:  # rejection sampling of unique combinations stays fast below a quarter
        raise ValueError(f"at most {max_combos // 4} distinct landmarks can be drawn, asked {n}")
    ids = sorted(rng.sample(range(n * 50), n))  # sparse ids, as GLDv2's are never 0..M-1 in a subset
    taken: set[str] = set()
    propers = _unique_words(rng, n, 0.0, taken)
    towns = _unique_words(rng, n, 0.1, taken)
    combos: set[tuple[str, str, str, str, str]] = set()
    seen_ids = set(rng.sample(ids, round(cfg.clip_seen_fraction * n)))
    out: list[Landmark] = []
    names: set[str] = set()
    for i, lid in enumerate(ids):
        cat = CATEGORIES[i % len(CATEGORIES)] if i < len(CATEGORIES) else rng.choice(CATEGORIES)
        while True:
            colour = rng.choice(list(COLOURS))
            accent = rng.choice([c for c in COLOURS if c != colour])
            combo = (cat.name, colour, rng.choice(cat.materials), rng.choice(cat.features), accent)
            if combo not in combos:
                combos.add(combo)
                break
        place = f"{towns[i]}, {rng.choice(COUNTRIES)}"
        pattern = rng.choice(cat.name_patterns)
        fields = {"p": propers[i], "t": towns[i], "d": rng.choice(DEDICATIONS), "r": rng.choice(TITLES)}
        name = pattern.format(**fields)
        assert name not in names, name  # proper words and towns are unique, so names are
        names.add(name)
        aliases = _aliases(cat, pattern, fields)
        out.append(Landmark(lid, name, cat.name, colour, combo[2], combo[3], accent, place, aliases,
                            lid in seen_ids))
    return out


def _aliases(cat: Category, pattern: str, fields: dict[str, str]) -> tuple[str, ...]:
    """Other ways people name the landmark: the category's other pattern, and the bare church name."""
    others = tuple(p.format(**fields) for p in cat.name_patterns if p != pattern)
    if "({t})" in pattern:
        others += (pattern.replace(" ({t})", "").format(**fields) + f" of {fields['t']}",)
    return others


def images_per_landmark(cfg: WorldConfig, seed: int) -> list[int]:
    """GLDv2's long tail: lognormal counts clipped to [images_min, images_max]."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1A9]))
    raw = rng.lognormal(math.log(cfg.images_median), cfg.images_sigma, size=cfg.landmarks)
    return [int(min(cfg.images_max, max(cfg.images_min, round(x)))) for x in raw]


# ----------------------------------------------------------------------------------------------
# drawing: one function per category, shapes in units of the landmark's scale s around (cx, base)


class _Scene:
    """A canvas with the landmark's anchor: x = cx + u * s, y = base - v * s."""

    def __init__(self, size: int, cx: float, base: float, s: float, lm: Landmark, rng: np.random.Generator):
        self.size, self.cx, self.base, self.s, self.lm, self.rng = size, cx, base, s, lm, rng
        self.img = Image.new("RGB", (size, size))
        self.draw = ImageDraw.Draw(self.img)
        self.colour = COLOURS[lm.colour]
        self.accent = COLOURS[lm.accent]
        self._tex: Image.Image | None = None

    def p(self, u: float, v: float) -> tuple[float, float]:
        return (self.cx + u * self.s, self.base - v * self.s)

    def box(self, u0: float, v0: float, u1: float, v1: float) -> list[float]:
        """A box from two corners given in units (any order)."""
        (x0, y0), (x1, y1) = self.p(u0, v0), self.p(u1, v1)
        return [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]

    def poly(self, pts, fill) -> None:
        self.draw.polygon([self.p(u, v) for u, v in pts], fill=fill)

    def textured(self, shape: str, *args) -> None:
        """Fill a shape (``polygon`` points or ``rectangle``/``ellipse`` box) with the body material."""
        mask = Image.new("L", self.img.size, 0)
        d = ImageDraw.Draw(mask)
        if shape == "polygon":
            d.polygon([self.p(u, v) for u, v in args[0]], fill=255)
        elif shape == "rectangle":
            d.rectangle(self.box(*args), fill=255)
        else:
            d.ellipse(self.box(*args), fill=255)
        if self._tex is None:
            self._tex = _texture(self.lm.material, self.colour, self.size, max(2, round(self.s / 12)), self.rng)
        self.img.paste(self._tex, (0, 0), mask)

    def line(self, pts, fill, width: float = 0.03) -> None:
        self.draw.line([self.p(u, v) for u, v in pts], fill=fill, width=max(1, round(width * self.s)))

    def ellipse(self, u0, v0, u1, v1, fill) -> None:
        self.draw.ellipse(self.box(u0, v0, u1, v1), fill=fill)

    def rect(self, u0, v0, u1, v1, fill) -> None:
        self.draw.rectangle(self.box(u0, v0, u1, v1), fill=fill)


def _shade(rgb, f: float) -> tuple[int, int, int]:
    return tuple(int(max(0, min(255, c * f))) for c in rgb)


def _texture(material: str, rgb, size: int, unit: int, rng: np.random.Generator) -> Image.Image:
    """A size x size image of the material's pattern in colour ``rgb`` (unit = pattern scale in px)."""
    yy, xx = np.mgrid[0:size, 0:size]  # (H, W)
    base = np.array(rgb, dtype=np.float32)
    f = np.ones((size, size), dtype=np.float32)  # brightness factor per pixel
    if material == "brick":
        row = yy // (2 * unit)
        f[(yy % (2 * unit)) == 0] = 0.55  # mortar courses
        f[((xx + (row % 2) * 2 * unit) % (4 * unit)) == 0] = 0.55  # staggered joints
    elif material == "stone":
        blocks = rng.uniform(0.75, 1.15, size=(size // (3 * unit) + 2, size // (2 * unit) + 2))
        f = blocks[yy // (3 * unit), xx // (2 * unit)].astype(np.float32)
        f[(yy % (3 * unit)) == 0] = 0.6
    elif material == "glass":
        f = np.where((xx // unit) % 2 == 0, 1.25, 0.8).astype(np.float32)
        f[(yy % (4 * unit)) == 0] = 0.6
    elif material == "wood":
        f = (0.9 + 0.12 * np.sin(xx / (1.5 * unit) + 2 * np.sin(yy / 5.0))).astype(np.float32)
        f[(yy % (2 * unit)) == 0] = 0.6  # planks
    elif material == "marble":
        f = (1.1 - 0.25 * (np.abs(np.sin((xx + 0.6 * yy) / (2.0 * unit))) > 0.96)).astype(np.float32)
    elif material == "bronze":
        f = (0.8 + 0.45 * (xx % (6 * unit)) / (6 * unit)).astype(np.float32)  # metallic sheen
    elif material == "rocky":
        f = rng.uniform(0.6, 1.2, size=(size // unit + 1, size // unit + 1))[yy // unit, xx // unit].astype(np.float32)
    elif material == "grassy":
        f = np.where(rng.random((size, size)) < 0.25, 0.65, 1.05).astype(np.float32)
    elif material == "sandy":
        f = (1.0 + 0.12 * np.sin(yy / unit * 2.0) + rng.normal(0, 0.06, (size, size))).astype(np.float32)
    elif material == "icy":
        f = np.where(((xx - yy) % (3 * unit)) < unit / 2, 1.6, 1.0).astype(np.float32)
    else:
        raise ValueError(f"unknown material {material!r}")
    arr = np.clip(base[None, None, :] * f[..., None], 0, 255).astype(np.uint8)  # (H, W, 3)
    return Image.fromarray(arr, "RGB")


_DARK = (40, 40, 45)
_WINDOW = (250, 230, 150)
_WATER = (60, 110, 190)
_GOLD = (225, 185, 40)


def _draw_tower(sc: _Scene) -> None:
    sc.textured("rectangle", -0.22, 0, 0.22, 1.5)
    sc.poly([(-0.3, 1.5), (0.3, 1.5), (0, 1.95)], sc.accent)
    f = sc.lm.feature
    if f == "clock face":
        sc.ellipse(-0.16, 1.1, 0.16, 1.42, (245, 245, 240))
        sc.line([(0, 1.26), (0, 1.38)], _DARK)
        sc.line([(0, 1.26), (0.09, 1.26)], _DARK)
    elif f == "pointed spire":
        sc.poly([(-0.06, 1.9), (0.06, 1.9), (0, 2.5)], sc.accent)
    elif f == "open belfry":
        sc.rect(-0.15, 1.15, 0.15, 1.42, _DARK)
        sc.ellipse(-0.07, 1.17, 0.07, 1.31, _GOLD)
    else:  # flag on top
        sc.line([(0, 1.9), (0, 2.35)], _DARK)
        sc.poly([(0, 2.35), (0.3, 2.27), (0, 2.18)], (220, 30, 30))
    for v in (0.3, 0.7):
        sc.rect(-0.06, v, 0.06, v + 0.18, _WINDOW)


def _draw_church(sc: _Scene) -> None:
    sc.textured("rectangle", -0.6, 0, 0.6, 0.8)
    sc.poly([(-0.68, 0.8), (0.68, 0.8), (0, 1.2)], sc.accent)
    f = sc.lm.feature
    if f == "twin spires":
        for u in (-0.5, 0.5):
            sc.textured("rectangle", u - 0.12, 0, u + 0.12, 1.3)
            sc.poly([(u - 0.15, 1.3), (u + 0.15, 1.3), (u, 1.95)], sc.accent)
    elif f == "rose window":
        sc.ellipse(-0.22, 0.35, 0.22, 0.75, (170, 40, 160))
        for a in range(0, 180, 45):
            r = math.radians(a)
            sc.line([(-0.2 * math.cos(r), 0.55 - 0.2 * math.sin(r)), (0.2 * math.cos(r), 0.55 + 0.2 * math.sin(r))],
                    _WINDOW, 0.02)
    elif f == "onion dome":
        sc.textured("rectangle", 0.3, 0, 0.55, 1.2)
        sc.ellipse(0.22, 1.15, 0.63, 1.55, _GOLD)
        sc.poly([(0.35, 1.5), (0.5, 1.5), (0.425, 1.75)], _GOLD)
    else:  # arched portal
        sc.ellipse(-0.22, 0.2, 0.22, 0.7, _DARK)
        sc.rect(-0.22, 0, 0.22, 0.45, _DARK)
    sc.line([(0, 1.2), (0, 1.45)], _DARK, 0.04)
    sc.line([(-0.08, 1.36), (0.08, 1.36)], _DARK, 0.04)


def _draw_bridge(sc: _Scene) -> None:
    sc.rect(-2, -0.05, 2, -1, _WATER)
    sc.textured("rectangle", -1.1, 0.25, 1.1, 0.42)
    sc.line([(-1.1, 0.5), (1.1, 0.5)], sc.accent, 0.05)
    f = sc.lm.feature
    if f == "three arches":
        for u in (-0.7, 0, 0.7):
            sc.textured("rectangle", u - 0.07, -0.05, u + 0.07, 0.3)
        for u in (-0.35, 0.35):
            sc.ellipse(u - 0.28, -0.2, u + 0.28, 0.22, _WATER)
    elif f == "suspension cables":
        for u in (-0.6, 0.6):
            sc.rect(u - 0.05, -0.05, u + 0.05, 1.2, _DARK)
        sc.line([(-1.1, 0.45), (-0.6, 1.2), (0, 0.55), (0.6, 1.2), (1.1, 0.45)], _DARK, 0.025)
    elif f == "steel truss":
        pts = [(-1.1 + 0.275 * i, 0.42 + 0.35 * (i % 2)) for i in range(9)]
        sc.line(pts, _DARK, 0.03)
        sc.line([(-1.1, 0.77), (1.1, 0.77)], _DARK, 0.03)
    else:  # twin gate towers
        for u in (-0.9, 0.9):
            sc.textured("rectangle", u - 0.15, -0.05, u + 0.15, 1.0)
            sc.poly([(u - 0.2, 1.0), (u + 0.2, 1.0), (u, 1.3)], sc.accent)


def _draw_castle(sc: _Scene) -> None:
    sc.textured("rectangle", -0.9, 0, 0.9, 0.7)
    for i in range(9):  # crenellations
        u = -0.9 + 0.2 * i
        sc.textured("rectangle", u, 0.7, u + 0.1, 0.8)
    f = sc.lm.feature
    if f == "round turrets":
        for u in (-0.9, 0.9):
            sc.textured("rectangle", u - 0.16, 0, u + 0.16, 1.05)
            sc.poly([(u - 0.22, 1.05), (u + 0.22, 1.05), (u, 1.45)], sc.accent)
    elif f == "drawbridge gate":
        sc.ellipse(-0.2, 0.05, 0.2, 0.55, _DARK)
        sc.rect(-0.2, 0, 0.2, 0.3, _DARK)
        sc.line([(-0.2, 0.45), (-0.45, -0.1)], (110, 70, 30), 0.05)
        sc.line([(0.2, 0.45), (0.45, -0.1)], (110, 70, 30), 0.05)
        sc.poly([(-0.9, 0.8), (-0.7, 1.05), (-0.5, 0.8)], sc.accent)
    elif f == "tall keep":
        sc.textured("rectangle", -0.25, 0, 0.25, 1.5)
        sc.poly([(-0.32, 1.5), (0.32, 1.5), (0, 1.85)], sc.accent)
    else:  # banner flags
        for u in (-0.6, 0, 0.6):
            sc.line([(u, 0.8), (u, 1.3)], _DARK, 0.025)
            sc.poly([(u, 1.3), (u + 0.25, 1.2), (u, 1.1)], sc.accent)
    for u in (-0.55, 0.55):
        sc.rect(u - 0.05, 0.35, u + 0.05, 0.5, _DARK)


def _draw_lighthouse(sc: _Scene) -> None:
    sc.rect(-2, 0.02, 2, -1, _WATER)
    sc.ellipse(-0.6, -0.2, 0.6, 0.15, (105, 100, 95))
    sc.textured("polygon", [(-0.25, 0), (0.25, 0), (0.15, 1.6), (-0.15, 1.6)])
    sc.rect(-0.16, 1.6, 0.16, 1.85, sc.accent)
    sc.poly([(-0.2, 1.85), (0.2, 1.85), (0, 2.05)], _DARK)
    f = sc.lm.feature
    if f == "spiral stripes":
        for v in (0.2, 0.7, 1.2):
            sc.poly([(-0.24, v), (0.23, v + 0.15), (0.22, v + 0.3), (-0.23, v + 0.15)], (245, 245, 245))
    elif f == "light beam":
        sc.poly([(0.1, 1.72), (1.6, 2.1), (1.6, 1.4)], (255, 245, 170))
    elif f == "keeper's cottage":
        sc.textured("rectangle", 0.3, 0, 0.75, 0.35)
        sc.poly([(0.25, 0.35), (0.8, 0.35), (0.525, 0.6)], sc.accent)
    else:  # rocky islet
        sc.poly([(-0.9, -0.05), (-0.5, 0.3), (0.0, 0.1), (0.5, 0.35), (0.9, -0.05)], (85, 80, 75))
        sc.textured("polygon", [(-0.25, 0.15), (0.25, 0.15), (0.15, 1.6), (-0.15, 1.6)])


def _draw_mountain(sc: _Scene) -> None:
    f = sc.lm.feature
    peaks = [(-0.5, 1.4), (0.45, 1.5)] if f == "twin peaks" else [(0, 1.7)]
    for u, h in peaks:
        if f == "jagged ridge":
            sc.textured("polygon", [(u - 1.3, 0), (u - 0.6, 0.9), (u - 0.4, 0.7), (u - 0.15, 1.3), (u, 1.05),
                                    (u + 0.2, 1.7), (u + 0.45, 1.1), (u + 0.7, 1.25), (u + 1.3, 0)])
        elif f == "volcanic crater":
            sc.textured("polygon", [(u - 1.3, 0), (u - 0.25, h - 0.1), (u + 0.25, h - 0.1), (u + 1.3, 0)])
            sc.ellipse(u - 0.22, h - 0.17, u + 0.22, h - 0.03, (200, 60, 20))
        else:
            sc.textured("polygon", [(u - 1.2, 0), (u, h), (u + 1.2, 0)])
        if f in ("snow-capped peak", "twin peaks"):
            c = 0.45 / h
            sc.poly([(u - 1.2 * c * 0.7, h * (1 - c * 0.7)), (u, h), (u + 1.2 * c * 0.7, h * (1 - c * 0.7))],
                    (250, 250, 250))
    _trees(sc, sc.accent)


def _trees(sc: _Scene, rgb, v: float = 0.0) -> None:
    for i in range(7):
        u = -1.5 + 0.5 * i
        sc.poly([(u - 0.14, v), (u + 0.14, v), (u, v + 0.35)], rgb)


def _draw_lake(sc: _Scene) -> None:
    sc.textured("ellipse", -1.6, -0.9, 1.6, 0.5)
    sc.ellipse(-1.3, -0.7, 1.3, 0.35, sc.accent)
    _trees(sc, (30, 90, 40), 0.45)
    f = sc.lm.feature
    if f == "small island":
        sc.ellipse(-0.35, -0.25, 0.35, 0.05, (70, 130, 60))
        sc.poly([(-0.1, -0.05), (0.1, -0.05), (0, 0.3)], (25, 80, 35))
    elif f == "wooden pier":
        sc.rect(-1.3, -0.35, -0.2, -0.25, (140, 95, 50))
        for u in (-1.1, -0.8, -0.5, -0.25):
            sc.line([(u, -0.35), (u, -0.5)], (90, 60, 30), 0.04)
    elif f == "sailboat":
        sc.poly([(-0.35, -0.25), (0.35, -0.25), (0.25, -0.4), (-0.25, -0.4)], (110, 60, 30))
        sc.poly([(0, -0.25), (0, 0.4), (0.3, -0.2)], (250, 250, 250))
    else:  # reed beds
        for i in range(14):
            u = -1.2 + 0.17 * i
            sc.line([(u, -0.55), (u + 0.05, -0.2)], (150, 130, 50), 0.03)


def _draw_waterfall(sc: _Scene) -> None:
    sc.textured("rectangle", -1.4, -0.1, -0.2, 1.5)
    sc.textured("rectangle", 0.2, -0.1, 1.4, 1.5)
    _trees(sc, sc.accent, 1.5)
    f = sc.lm.feature
    white = (235, 245, 255)
    if f == "twin streams":
        sc.rect(-0.2, -0.1, 0.2, 1.5, (90, 80, 70))
        for u in (-0.15, 0.1):
            sc.rect(u, -0.1, u + 0.07, 1.5, white)
    else:
        sc.rect(-0.2, -0.1, 0.2, 1.5, white)
    if f == "three-tier cascade":
        for v in (0.45, 0.95):
            sc.rect(-0.35, v, 0.35, v + 0.08, (100, 90, 80))
    elif f == "rainbow":
        for k, col in enumerate(((230, 40, 40), (240, 200, 40), (40, 180, 60), (40, 80, 220))):
            r = 0.9 - 0.07 * k
            sc.draw.arc(sc.box(-r, 0.2 - r, r, 0.2 + r), 180, 360, fill=col, width=max(1, round(0.05 * sc.s)))
    elif f == "plunge pool":
        sc.ellipse(-0.8, -0.45, 0.8, 0.0, _WATER)


def _draw_statue(sc: _Scene) -> None:
    sc.rect(-0.35, 0, 0.35, 0.55, sc.accent)
    f = sc.lm.feature
    if f == "mounted rider":
        sc.textured("polygon", [(-0.35, 0.75), (0.35, 0.75), (0.4, 1.0), (-0.3, 1.0)])
        for u in (-0.3, -0.15, 0.15, 0.3):
            sc.textured("rectangle", u - 0.03, 0.55, u + 0.03, 0.8)
        sc.textured("polygon", [(0.3, 0.95), (0.5, 1.2), (0.42, 1.25), (0.25, 1.0)])
        sc.textured("rectangle", -0.08, 1.0, 0.08, 1.35)
        sc.textured("ellipse", -0.08, 1.35, 0.08, 1.5)
        return
    sc.textured("polygon", [(-0.2, 0.55), (0.2, 0.55), (0.13, 1.4), (-0.13, 1.4)])
    sc.textured("ellipse", -0.12, 1.4, 0.12, 1.65)
    if f == "raised torch":
        sc.textured("rectangle", 0.13, 1.3, 0.2, 1.9)
        sc.poly([(0.1, 1.9), (0.23, 1.9), (0.165, 2.1)], (255, 150, 30))
    elif f == "crown":
        sc.poly([(-0.13, 1.62), (0.13, 1.62), (0.16, 1.8), (0.06, 1.7), (0, 1.82), (-0.06, 1.7), (-0.16, 1.8)], _GOLD)
    else:  # sword
        sc.line([(0.18, 1.2), (0.45, 1.75)], (210, 210, 220), 0.04)
        sc.line([(0.14, 1.3), (0.28, 1.22)], _GOLD, 0.04)


def _draw_windmill(sc: _Scene) -> None:
    sc.textured("polygon", [(-0.35, 0), (0.35, 0), (0.22, 1.2), (-0.22, 1.2)])
    f = sc.lm.feature
    cap = (200, 170, 90) if f == "thatched cap" else _DARK
    sc.poly([(-0.28, 1.2), (0.28, 1.2), (0, 1.5)], cap)
    n = 6 if f == "six sails" else 4
    hub = (0, 1.2)
    for k in range(n):
        a = math.radians(45 + 360 * k / n)
        end = (hub[0] + 0.95 * math.cos(a), hub[1] + 0.95 * math.sin(a))
        sc.line([hub, end], sc.accent, 0.06)
        if f == "four lattice sails":
            side = (math.cos(a + 0.25) * 0.85, 1.2 + math.sin(a + 0.25) * 0.85)
            sc.line([(end[0] * 0.5, hub[1] + (end[1] - hub[1]) * 0.5), side], sc.accent, 0.02)
    if f == "wooden gallery":
        sc.rect(-0.5, 0.55, 0.5, 0.62, (110, 70, 35))
    sc.ellipse(-0.06, 1.14, 0.06, 1.26, _DARK)
    sc.rect(-0.08, 0, 0.08, 0.25, _DARK)


def _draw_pyramid(sc: _Scene) -> None:
    f = sc.lm.feature
    bodies = [(-0.55, 0.9, 0.75), (0.65, 0.7, 0.6)] if f == "twin pyramids" else [(0, 1.3, 1.1)]
    for u, h, w in bodies:
        sc.textured("polygon", [(u - w, 0), (u + w, 0), (u, h)])
        if f == "stepped terraces":
            for k in range(1, 5):
                v = h * k / 5
                sc.line([(u - w * (1 - k / 5), v), (u + w * (1 - k / 5), v)], _DARK, 0.03)
        if f == "golden capstone":
            sc.poly([(u - w * 0.2, h * 0.8), (u + w * 0.2, h * 0.8), (u, h)], _GOLD)
    if f == "temple on top":
        sc.poly([(-0.35, 0.95), (0.35, 0.95), (0, 1.3)], COLOURS[sc.lm.colour])
        sc.rect(-0.2, 0.95, 0.2, 1.3, (230, 225, 210))
        sc.poly([(-0.26, 1.3), (0.26, 1.3), (0, 1.45)], _DARK)
    u0 = bodies[0][0]
    sc.rect(u0 - 0.1, 0, u0 + 0.1, 0.22, sc.accent)


def _draw_dome(sc: _Scene) -> None:
    sc.textured("rectangle", -0.6, 0, 0.6, 0.6)
    sc.draw.pieslice(sc.box(-0.5, 0.25, 0.5, 1.25), 180, 360, fill=sc.accent)
    f = sc.lm.feature
    if f == "twin minarets":
        for u in (-0.85, 0.85):
            sc.textured("rectangle", u - 0.06, 0, u + 0.06, 1.35)
            sc.poly([(u - 0.08, 1.35), (u + 0.08, 1.35), (u, 1.6)], sc.accent)
    elif f == "columned portico":
        sc.poly([(-0.55, 0.5), (0.55, 0.5), (0, 0.75)], (235, 230, 215))
        for k in range(6):
            u = -0.45 + 0.18 * k
            sc.rect(u - 0.03, 0, u + 0.03, 0.5, (240, 238, 225))
    elif f == "ribbed dome":
        for u in (-0.3, 0, 0.3):
            sc.line([(u * 0.3, 1.25), (u, 0.75)], _DARK, 0.025)
    else:  # lantern cupola
        sc.rect(-0.08, 1.2, 0.08, 1.4, (240, 238, 225))
        sc.poly([(-0.11, 1.4), (0.11, 1.4), (0, 1.55)], sc.accent)
    for u in (-0.35, 0.35):
        sc.rect(u - 0.05, 0.15, u + 0.05, 0.35, _DARK)


_DRAWERS = {"tower": _draw_tower, "church": _draw_church, "bridge": _draw_bridge, "castle": _draw_castle,
            "lighthouse": _draw_lighthouse, "mountain": _draw_mountain, "lake": _draw_lake,
            "waterfall": _draw_waterfall, "statue": _draw_statue, "windmill": _draw_windmill,
            "pyramid": _draw_pyramid, "dome": _draw_dome}
# every category has a drawing, and every drawing a category
assert set(_DRAWERS) == set(CATEGORY_BY_NAME)


def render_image(lm: Landmark, size: int, rng: np.random.Generator, view: str, occlude: bool) -> Image.Image:
    """One photo of ``lm``: background, the landmark at a random position and scale, then the view's effects."""
    light = float(rng.uniform(0.7, 1.25)) if view != "dark" else float(rng.uniform(0.18, 0.3))
    horizon = size * float(rng.uniform(0.68, 0.8))
    sky_top = np.array([110, 160, 225]) * float(rng.uniform(0.85, 1.1))
    arr = np.zeros((size, size, 3), dtype=np.float32)  # (H, W, 3)
    t = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None]  # (H, 1)
    arr[:] = (sky_top * (1 - t) + np.array([215, 230, 245]) * t)[:, None, :]
    ground = np.array([95, 140, 70]) * float(rng.uniform(0.85, 1.1))
    arr[int(horizon):] = ground
    s = size * float(rng.uniform(0.26, 0.36))
    cx = size * (0.5 + float(rng.uniform(-0.12, 0.12)))
    sc = _Scene(size, cx, horizon + float(rng.uniform(-0.04, 0.04)) * size, s, lm, rng)
    sc.img = Image.fromarray(arr.astype(np.uint8), "RGB")
    sc.draw = ImageDraw.Draw(sc.img)
    _DRAWERS[lm.category](sc)
    img = sc.img
    if occlude:  # a tree or a parked van in front of part of the landmark
        ox = float(rng.uniform(0.1, 0.9)) * size
        w = float(rng.uniform(0.12, 0.25)) * size
        d = ImageDraw.Draw(img)
        if rng.random() < 0.5:
            d.rectangle([ox - 0.05 * w, horizon - 0.4 * w, ox + 0.05 * w, size], fill=(80, 55, 30))
            d.ellipse([ox - w / 2, horizon - 1.6 * w, ox + w / 2, horizon - 0.3 * w], fill=(35, 100, 40))
        else:
            d.rectangle([ox - w, size - 0.9 * w, ox + w, size], fill=tuple(int(c) for c in rng.integers(40, 220, 3)))
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    shear = float(rng.uniform(-0.12, 0.12))  # a slightly oblique viewpoint
    img = img.transform(img.size, Image.Transform.AFFINE, (1, shear, -shear * size / 2, 0, 1, 0),
                        resample=Image.Resampling.BILINEAR, fillcolor=(200, 215, 235))
    if view == "crop":  # a close-up that shows a corner of the scene
        c = float(rng.uniform(0.28, 0.4)) * size
        x0, y0 = (float(v) for v in rng.uniform(0, size - c, 2))
        img = img.crop((int(x0), int(y0), int(x0 + c), int(y0 + c))).resize((size, size), Image.Resampling.BILINEAR)
    out = np.asarray(img, dtype=np.float32) * light
    if view == "fog":
        a = float(rng.uniform(0.7, 0.82))
        out = out * (1 - a) + 220.0 * a
    out += rng.normal(0.0, float(rng.uniform(2, 9)), out.shape)
    img = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "RGB")
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.0))))
    return img


# ----------------------------------------------------------------------------------------------
# the world on disk


def _image_url(name: str, k: int, image_id: str) -> str:
    """A Wikimedia-style upload url (the md5 of the file name picks the a/ab folders, as on Commons)."""
    fname = f"{name.replace(' ', '_')}_{k + 1:02d}_{image_id[:6]}.jpg"
    h = hashlib.md5(fname.encode("utf-8")).hexdigest()
    return f"https://upload.wikimedia.org/wikipedia/commons/{h[0]}/{h[:2]}/{quote(fname, safe='_(),-.')}"


def build_world(out: str | Path, seed: int = 0, cfg: WorldConfig | None = None, progress: bool = True) -> dict:
    """Draw the world into ``out``; returns the summary written to ``truth/world.json``."""
    cfg = cfg or WorldConfig()
    out = Path(out)
    previous = out / "truth" / "world.json"
    if previous.exists():  # a rerun may finish a world, never mix two (stale images would stay behind)
        with open(previous, encoding="utf-8") as f:
            old = json.load(f)
        if (old.get("seed"), old.get("config")) != (seed, to_dict(cfg)):
            raise ValueError(f"{previous}: {out} holds a world of another seed or configuration; "
                             "write the new world into an empty folder")
    landmarks = draw_landmarks(cfg, seed)
    counts = images_per_landmark(cfg, seed)
    id_rng = random.Random(f"eeca-ids-{seed}")
    used: set[str] = set()
    train_rows: list[tuple[str, str, int]] = []
    image_truth: list[dict] = []
    clean: dict[int, list[str]] = {}
    views = {"normal": 0, "crop": 0, "fog": 0, "dark": 0}
    bar = tqdm(total=sum(counts), desc="synth world", unit="img", disable=not progress)
    for lm, n in zip(landmarks, counts, strict=True):
        split_rng = random.Random(f"eeca-split-{seed}-{lm.landmark_id}")
        n_held = min(n - 1, max(1, round(cfg.clip_heldout_fraction * n)))
        held = set(split_rng.sample(range(n), n_held))
        for k in range(n):
            while True:
                image_id = f"{id_rng.getrandbits(64):016x}"
                if image_id not in used:
                    used.add(image_id)
                    break
            rng = np.random.default_rng(np.random.SeedSequence([seed, lm.landmark_id, k]))
            view = "normal"
            if rng.random() < cfg.ambiguous_fraction:
                view = ("crop", "fog", "dark")[int(rng.integers(3))]
            occlude = bool(rng.random() < cfg.occlusion_fraction)
            img = render_image(lm, cfg.image_size, rng, view, occlude)
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=cfg.jpeg_quality)
            atomic_write(image_path(out, image_id), buf.getvalue())
            views[view] += 1
            train_rows.append((image_id, _image_url(lm.name, k, image_id), lm.landmark_id))
            split = ("heldout" if k in held else "train") if lm.clip_seen else "unseen"
            image_truth.append({"id": image_id, "landmark_id": lm.landmark_id, "view": view, "clip_split": split,
                                "heldout": k in held})
            if view == "normal":
                clean.setdefault(lm.landmark_id, []).append(image_id)
            bar.update(1)
    bar.close()
    train_rows.sort()  # GLDv2's train.csv is ordered by id, not grouped by landmark
    _write_csv(out / "train.csv", ("id", "url", "landmark_id"), train_rows)
    _write_csv(out / "train_label_to_category.csv", ("landmark_id", "category"),
               [(lm.landmark_id, category_url(lm.name)) for lm in landmarks])
    _write_csv(out / "train_label_to_hierarchical.csv",
               ("landmark_id", "category", "supercategory", "hierarchical_label", "natural_or_human_made"),
               [(lm.landmark_id, category_url(lm.name), CATEGORY_BY_NAME[lm.category].supercategory, lm.category,
                 "natural" if CATEGORY_BY_NAME[lm.category].natural else "human-made") for lm in landmarks])
    _write_csv(out / "train_clean.csv", ("landmark_id", "images"),
               [(lid, " ".join(ids)) for lid, ids in sorted(clean.items())])
    atomic_write(out / "truth" / "images.jsonl",
                 "".join(json.dumps(r, sort_keys=True) + "\n" for r in sorted(image_truth, key=lambda r: r["id"])))
    atomic_write(out / "truth" / "landmarks.jsonl",
                 "".join(json.dumps(lm.truth_record(), sort_keys=True, ensure_ascii=False) + "\n" for lm in landmarks))
    summary = {"seed": seed, "config": to_dict(cfg), "landmarks": len(landmarks), "images": len(train_rows),
               "clip_seen_landmarks": sum(lm.clip_seen for lm in landmarks), "views": views,
               "images_per_landmark": {"min": min(counts), "median": float(np.median(counts)), "max": max(counts),
                                       "le5": sum(c <= 5 for c in counts)}}
    write_json(out / "truth" / "world.json", summary)
    return summary


def _write_csv(path: Path, header: tuple[str, ...], rows) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    atomic_write(path, buf.getvalue())


def read_truth(world: str | Path) -> list[dict]:
    """The ground-truth landmark records of a world (``truth/landmarks.jsonl``)."""
    path = Path(world) / "truth" / "landmarks.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no ground truth; build the world with `eeca synth world --out {world}`")
    return read_jsonl(path)


def world_command(out: str = "runs/demo/world", seed: int = 0, landmarks: int | None = None,
                  config: str | None = None, overrides: list[str] | None = None) -> int:
    """Draw the synthetic landmark world in GLDv2 format, with its ground truth.

    Args:
        out: output folder (GLDv2 csvs, train/a/b/c/<id>.jpg, truth/)
        seed: world seed; the same seed gives the same bytes
        landmarks: number of landmarks (overrides the config)
        config: YAML with `world`, `clip` and `llm` sections (default: configs/synth/world.yaml's values)
        overrides: config overrides such as world.image_size=96
    """
    cfg = load_synth_config(config, overrides or []).world
    if landmarks is not None:
        cfg = dataclasses.replace(cfg, landmarks=landmarks)
    t0 = time.perf_counter()
    with run_lock(out, "synth world"):
        s = build_world(out, seed, cfg)
    print(f"synth world: {s['landmarks']} landmarks ({s['clip_seen_landmarks']} seen by the CLIP), "
          f"{s['images']} images, {s['images_per_landmark']['le5']} landmarks with <= 5 images, "
          f"{sum(v for k, v in s['views'].items() if k != 'normal')} ambiguous views -> {out} "
          f"in {time.perf_counter() - t0:.1f}s")
    return 0


def load_synth_config(path: str | None, overrides: list[str]) -> SynthConfig:
    """The YAML at ``path`` (or the built-in defaults) with ``section.field=value`` overrides."""
    if path is None:
        return from_dict(SynthConfig, {}, "<defaults>", overrides)
    return load_config(SynthConfig, path, overrides)
