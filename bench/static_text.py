"""The gzip-static workload's file: ~100 KiB of a realistic stylesheet.

Generated from a fixed seed, so every run serves the same bytes: component
rules with BEM-like class names, the usual properties with varied values,
state and pseudo-class variants, media queries and comments, the way a
site's unminified app.css looks. Text of this kind compresses about as real
CSS does (several times), unlike the random bytes of the other static files.
"""

import random

NAME = "app.css"
TARGET_SIZE = 100 * 1024

_BLOCKS = ["header", "nav", "card", "button", "modal", "form", "table", "sidebar", "footer",
           "alert", "badge", "tooltip", "dropdown", "tabs", "pagination", "avatar", "toast",
           "breadcrumb", "hero", "pricing", "search", "gallery", "timeline", "profile"]
_ELEMENTS = ["title", "body", "icon", "item", "link", "label", "input", "header", "footer",
             "image", "caption", "actions", "list", "meta", "close"]
_MODIFIERS = ["primary", "secondary", "large", "small", "active", "disabled", "dark",
              "compact", "outlined", "rounded", "danger", "success"]
_PSEUDO = [":hover", ":focus", ":focus-visible", ":active", "::before", "::after",
           ":first-child", ":last-child", ":not(:last-child)"]
_COLOURS = ["#1a73e8", "#202124", "#5f6368", "#ffffff", "#f1f3f4", "#d93025", "#188038",
            "#f9ab00", "rgba(0, 0, 0, 0.12)", "rgba(32, 33, 36, 0.6)", "var(--accent)",
            "var(--surface)", "var(--text-muted)", "currentColor", "transparent"]
_UNITS = ["px", "rem", "em", "%"]


def _length(rng):
    unit = rng.choice(_UNITS)
    if unit == "px":
        return f"{rng.choice([0, 1, 2, 4, 6, 8, 12, 16, 20, 24, 32, 48, 64])}px"
    if unit == "%":
        return f"{rng.choice([25, 33.333, 50, 66.667, 75, 100])}%"
    return f"{rng.choice([0.25, 0.5, 0.75, 1, 1.25, 1.5, 2, 3])}{unit}"


_PROPERTIES = [
    ("display", lambda r: r.choice(["block", "flex", "inline-flex", "grid", "none", "inline-block"])),
    ("position", lambda r: r.choice(["relative", "absolute", "sticky", "fixed"])),
    ("margin", lambda r: " ".join(_length(r) for _ in range(r.choice([1, 2, 4])))),
    ("padding", lambda r: " ".join(_length(r) for _ in range(r.choice([1, 2, 4])))),
    ("width", _length), ("max-width", _length), ("min-height", _length), ("gap", _length),
    ("color", lambda r: r.choice(_COLOURS)),
    ("background-color", lambda r: r.choice(_COLOURS)),
    ("border", lambda r: f"{r.choice([1, 2])}px {r.choice(['solid', 'dashed'])} {r.choice(_COLOURS)}"),
    ("border-radius", _length),
    ("font-size", lambda r: r.choice(["0.75rem", "0.875rem", "1rem", "1.125rem", "1.5rem", "2rem"])),
    ("font-weight", lambda r: r.choice(["400", "500", "600", "700"])),
    ("line-height", lambda r: r.choice(["1", "1.25", "1.5", "1.75"])),
    ("align-items", lambda r: r.choice(["center", "flex-start", "flex-end", "stretch"])),
    ("justify-content", lambda r: r.choice(["center", "space-between", "flex-start", "flex-end"])),
    ("box-shadow", lambda r: f"0 {r.choice([1, 2, 4, 8])}px {r.choice([2, 4, 8, 16])}px {r.choice(_COLOURS)}"),
    ("transition", lambda r: f"{r.choice(['opacity', 'transform', 'background-color', 'all'])} "
                             f"{r.choice([100, 150, 200, 300])}ms ease-in-out"),
    ("opacity", lambda r: r.choice(["0", "0.5", "0.64", "0.87", "1"])),
    ("z-index", lambda r: str(r.choice([1, 10, 100, 1000]))),
    ("overflow", lambda r: r.choice(["hidden", "auto", "visible"])),
    ("text-transform", lambda r: r.choice(["none", "uppercase", "capitalize"])),
    ("cursor", lambda r: r.choice(["pointer", "default", "not-allowed"])),
]


def _selector(rng):
    block = rng.choice(_BLOCKS)
    sel = f".{block}"
    roll = rng.random()
    if roll < 0.45:
        sel += f"__{rng.choice(_ELEMENTS)}"
    elif roll < 0.75:
        sel += f"--{rng.choice(_MODIFIERS)}"
    if rng.random() < 0.3:
        sel += rng.choice(_PSEUDO)
    if rng.random() < 0.15:
        sel += f" .{block}__{rng.choice(_ELEMENTS)}"
    return sel


def _rule(rng, indent=""):
    selectors = ",\n".join(indent + _selector(rng) for _ in range(rng.choice([1, 1, 1, 2, 3])))
    props = rng.sample(_PROPERTIES, rng.randrange(2, 9))
    body = "".join(f"{indent}  {name}: {value(rng)};\n" for name, value in props)
    return f"{selectors} {{\n{body}{indent}}}\n\n"


def stylesheet(target=TARGET_SIZE, seed=7):
    """The stylesheet's bytes: whole components until at least `target` bytes."""
    rng = random.Random(seed)
    parts = [":root {\n  --accent: #1a73e8;\n  --surface: #ffffff;\n  --text-muted: #5f6368;\n}\n\n"]
    size = len(parts[0])
    while size < target:
        block = rng.choice(_BLOCKS)
        chunk = f"/* {block.capitalize()} component */\n\n"
        chunk += "".join(_rule(rng) for _ in range(rng.randrange(3, 8)))
        if rng.random() < 0.25:
            inner = "".join(_rule(rng, "  ") for _ in range(rng.randrange(1, 4)))
            chunk += f"@media (max-width: {rng.choice([480, 768, 1024])}px) {{\n{inner}}}\n\n"
        parts.append(chunk)
        size += len(chunk)
    return "".join(parts).encode()
