"""The config reference (docs/config.md), generated from the schema in `legibility.config` so it cannot drift.

    python -m legibility.config_reference > docs/config.md          # regenerate
    python -m legibility.config_reference --check docs/config.md    # exit 1 when the file is out of date

Every section of `ExperimentConfig` is walked recursively: per field its type (with its constraints), its default,
the reference run's value (configs/qwen3-8b-legibility-dpo.yaml, read with `load_config`) and its description (the
attribute docstring below the field in config.py).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import inspect
import re
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from legibility import config as _config
from legibility.config import ExperimentConfig, TrainConfig, load_config

__all__ = ["REFERENCE_CONFIG", "check", "main", "reference_markdown"]

REFERENCE_CONFIG = "configs/qwen3-8b-legibility-dpo.yaml"
"""The reference run, relative to the repository root."""
REGENERATE = "python -m legibility.config_reference > docs/config.md"
_ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------------ values and types


def _num(x: Any) -> str:
    """A bound as written in a config: 1 rather than 1.0."""
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return _yaml(x)


_PLAIN = re.compile(r"[A-Za-z0-9_./-]*[A-Za-z0-9_/.-]")


def _yaml(value: Any) -> str:
    """A value in YAML flow style, the way it would be written in a config (models: only their non-default keys)."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", exclude_defaults=True)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        # YAML 1.1 (PyYAML) reads 5e-06 as a string; 5.0e-06 is a float
        return re.sub(r"^(-?\d+)e", r"\1.0e", text)
    if isinstance(value, str):
        import yaml

        if _PLAIN.fullmatch(value) and yaml.safe_load(value) == value:
            return value
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    return str(value)


def _bounds(metadata: list[Any]) -> tuple[list[str], list[str]]:
    """(lower, upper) bounds as "op value", and length limits, from a field's annotated-types metadata."""
    lower, upper, length = [], [], []
    for m in metadata:
        if isinstance(m, at.Ge):
            lower.append(f">= {_num(m.ge)}")
        elif isinstance(m, at.Gt):
            lower.append(f"> {_num(m.gt)}")
        elif isinstance(m, at.Le):
            upper.append(f"<= {_num(m.le)}")
        elif isinstance(m, at.Lt):
            upper.append(f"< {_num(m.lt)}")
        elif isinstance(m, at.MinLen):
            length.append(f"min length {m.min_length}")
        elif isinstance(m, at.MaxLen):
            length.append(f"max length {m.max_length}")
    return lower + upper, length


def _type(ann: Any, metadata: list[Any] | None = None) -> str:
    """A short, readable type: `int >= 1`, `"strict" | "flexible"`, `list[str] | None`."""
    bounds, length = _bounds(metadata or [])
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if origin in (typing.Union, types.UnionType):
        parts = [a for a in args if a is not type(None)]
        text = " | ".join(_type(a, metadata) for a in parts)
        return text + (" | None" if len(parts) < len(args) else "")
    if origin is Literal:
        return " | ".join(_yaml(a) if not isinstance(a, str) else f'"{a}"' for a in args)
    if origin in (list, tuple, set):
        text = f"{origin.__name__}[{', '.join(_type(a) for a in args)}]"
        return text + (f" ({', '.join(length)})" if length else "")
    if origin is dict:
        return f"dict[{', '.join(_type(a) for a in args)}]"
    if ann is Any:
        return "Any"
    if ann is type(None):
        return "None"
    name = getattr(ann, "__name__", str(ann))
    if bounds:
        if len(bounds) == 2 and bounds[0].startswith(">"):
            low_op, low = bounds[0].split(" ", 1)
            return f"{low} {low_op.replace('>', '<')} {name} {bounds[1]}"
        return f"{name} {', '.join(bounds)}"
    return name + (f" ({', '.join(length)})" if length else "")


def _model_of(ann: Any) -> tuple[type[BaseModel] | None, bool]:
    """(model, is_list) when a field holds a section (a model) or a list of them."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann, False
    if typing.get_origin(ann) is list:
        (arg,) = typing.get_args(ann)
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg, True
    return None, False


# ------------------------------------------------------------------------------------------------ markdown helpers


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _code(text: str) -> str:
    text = text.replace("|", "\\|")
    return f"``{text}``" if "`" in text else f"`{text}`"


def _paragraphs(doc: str | None) -> list[str]:
    """A docstring as paragraphs, each on one line."""
    if not doc:
        return []
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", inspect.cleandoc(doc)) if p.strip()]


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _heading(path: str, model: type[BaseModel], is_list: bool) -> str:
    return f"`{path}{'[]' if is_list else ''}` ({model.__name__})" if path else "Top level"


# ------------------------------------------------------------------------------------------------ the walk


class _DocSection:
    def __init__(
        self,
        path: str,
        model: type[BaseModel],
        is_list: bool,
        defaults: BaseModel | None,
        bare: Any,
        reference: Any,
    ) -> None:
        self.path, self.model, self.is_list = path, model, is_list
        self.defaults = defaults  # the section's default instance (None: each field's declared default)
        self.bare = bare  # what a config stating only the required keys gives here (None for list items)
        self.reference = reference  # the reference run's section (a list of items for list sections)

    @property
    def heading(self) -> str:
        return _heading(self.path, self.model, self.is_list)

    def dotted(self, name: str) -> str:
        return f"{self.path}{'[]' if self.is_list else ''}.{name}" if self.path else name


def _sections(
    path: str, model: type[BaseModel], is_list: bool, defaults: Any, bare: Any, reference: Any
) -> Iterator[_DocSection]:
    """Pre-order: a section, then the sections its fields hold, in field order."""
    yield _DocSection(path, model, is_list, defaults, bare, reference)
    for name, field in model.model_fields.items():
        sub, sub_list = _model_of(field.annotation)
        if sub is None:
            continue
        sub_path = f"{path}{'[]' if is_list else ''}.{name}" if path else name
        if sub_list or is_list:
            # list items: each field's own default; the reference column shows one value per item
            items = reference if is_list else [reference]
            sub_ref = [x for item in items for x in (getattr(item, name) if sub_list else [getattr(item, name)])]
            yield from _sections(sub_path, sub, True, None, None, sub_ref)
        else:
            sub_default = (
                getattr(defaults, name) if defaults is not None else field.get_default(call_default_factory=True)
            )
            yield from _sections(sub_path, sub, False, sub_default, getattr(bare, name), getattr(reference, name))


def _default_of(section: _DocSection, name: str, field: FieldInfo) -> tuple[bool, Any]:
    """(required, default) of a field in its section."""
    if section.defaults is not None:
        return False, getattr(section.defaults, name)
    if field.is_required():
        return True, None
    return False, field.get_default(call_default_factory=True)


def _row(section: _DocSection, name: str, field: FieldInfo, anchors: dict[str, str]) -> str:
    required, default = _default_of(section, name, field)
    sub, sub_list = _model_of(field.annotation)
    dotted = section.dotted(name)
    link = f"[below](#{anchors[dotted]})" if dotted in anchors else ""
    if sub is not None and not sub_list:
        type_text, default_text = _code(sub.__name__), f"section, {link}"
    else:
        type_text = _code(_type(field.annotation, field.metadata))
        default_text = "*required*" if required else _code(_yaml(default))
        if sub_list and link:
            default_text += f" (items: {link})"
    if section.is_list:
        values = [getattr(item, name) for item in section.reference]
        if not values:
            ref_text = "(no items)"
        elif not required and all(v == default for v in values):
            ref_text = "="
        else:
            ref_text = _code(_yaml(values))
    else:
        value = getattr(section.reference, name)
        if not required and value == getattr(section.bare, name):
            ref_text = "="
        elif sub is not None and not sub_list:
            ref_text = f"differs, {link}"
        else:
            ref_text = _code(_yaml(value))
    return f"| {_code(dotted)} | {type_text} | {default_text} | {ref_text} | {_cell(field.description or '')} |"


def _dict_comments(name: str) -> dict[str, str]:
    """The trailing `# comment` of each key of a dict literal in config.py (TRL_DEFAULTS' reasons)."""
    source = inspect.getsource(_config)
    lines = source.splitlines()
    for node in ast.parse(source).body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if isinstance(target, ast.Name) and target.id == name and isinstance(node.value, ast.Dict):
            out = {}
            for key, value in zip(node.value.keys, node.value.values, strict=True):
                if isinstance(key, ast.Constant) and value.end_lineno is not None:
                    rest = lines[value.end_lineno - 1][value.end_col_offset or 0 :]
                    out[key.value] = rest.split("#", 1)[1].strip() if "#" in rest else ""
            return out
    return {}


def _kwargs_table(title: str, default: dict[str, Any], reference: dict[str, Any]) -> list[str]:
    rows = [f"| {title} | default `train:` | reference run |", "|---|---|---|"]
    for key in list(default) + [k for k in reference if k not in default]:
        d = _code(_yaml(default[key])) if key in default else "(unset)"
        r = "=" if key in default and key in reference and reference[key] == default[key] else None
        if r is None:
            r = _code(_yaml(reference[key])) if key in reference else "(unset)"
        rows.append(f"| {_code(key)} | {d} | {r} |")
    return rows


def _passthrough(reference: TrainConfig) -> list[str]:
    """`train.trl` and `train.lora`: what they pass through, the project's own defaults, what the recipe owns."""
    plain = TrainConfig()
    comments = _dict_comments("TRL_DEFAULTS")
    out = [
        "### `train.trl` (any `DPOConfig` field)",
        "",
        "`train.trl:` passes any other field of TRL's `DPOConfig` to the local backend (Together ignores it). The "
        "names are checked when the config is loaded, by building the real `DPOConfig` with the installed TRL: a "
        "misspelt key fails with `train.trl.<key>` and the closest field name.",
        "",
        "Project defaults (`TRL_DEFAULTS`), where this project chooses differently from TRL; a `train.trl:` key "
        "wins over each:",
        "",
        "| DPOConfig field | value | why |",
        "|---|---|---|",
    ]
    out += [
        f"| {_code(k)} | {_code(_yaml(v))} | {_cell(comments.get(k, ''))} |" for k, v in _config.TRL_DEFAULTS.items()
    ]
    out += [
        "",
        "Refused under `train.trl:` (the recipe fields set them, so one value cannot be spelt two ways):",
        "",
        "| DPOConfig field | why |",
        "|---|---|",
    ]
    out += [f"| {_code(k)} | {_cell(v)} |" for k, v in _config._TRL_OWNED.items()]
    out += [
        "",
        "The `DPOConfig` keyword arguments this gives (`TrainConfig.trl_kwargs()`, all but `output_dir`), for a "
        "config without a `train:` section and for the reference run:",
        "",
        *_kwargs_table("DPOConfig field", plain.trl_kwargs(), reference.trl_kwargs()),
        "",
        "### `train.lora` (any `LoraConfig` field)",
        "",
        "`train.lora:` passes any other field of PEFT's `LoraConfig` to the local backend, checked at load like "
        "`train.trl:`. Refused here (set by the `train.lora_*` fields): "
        + ", ".join(f"{_code(k)} (`train.{v}`)" for k, v in _config._LORA_OWNED.items())
        + ".",
        "",
        "The `LoraConfig` keyword arguments this gives (`TrainConfig.lora_kwargs()`):",
        "",
        *_kwargs_table("LoraConfig field", plain.lora_kwargs(), reference.lora_kwargs()),
        "",
    ]
    return out


def _load_reference(path: Path) -> ExperimentConfig:
    # loading imports TRL and PEFT; nothing they print may end up in the generated file
    with contextlib.redirect_stdout(sys.stderr):
        return load_config(path)


def _reference_path() -> Path:
    here = _ROOT / REFERENCE_CONFIG
    return here if here.is_file() else Path(REFERENCE_CONFIG)


def reference_markdown(
    root: type[ExperimentConfig] = ExperimentConfig,
    reference: ExperimentConfig | str | Path | None = None,
) -> str:
    """The Markdown reference of `root`'s schema, with the reference run's values (`reference`: a loaded config,
    or the path of one; default configs/qwen3-8b-legibility-dpo.yaml). Deterministic: the same schema and reference
    config give the same text."""
    if not isinstance(reference, BaseModel):
        reference = _load_reference(Path(reference) if reference is not None else _reference_path())
    # what a config stating only the required keys (the name) gives: "=" means leaving the key out changes nothing
    bare = root.model_validate({k: getattr(reference, k) for k, f in root.model_fields.items() if f.is_required()})
    sections = list(_sections("", root, False, None, bare, reference))
    anchors = {s.path: _anchor(s.heading) for s in sections if s.path}

    out = [
        "# Experiment config reference",
        "",
        f"<!-- Generated from legibility/config.py by `{REGENERATE}`; do not edit by hand. -->",
        "",
        *[p + "\n" for p in _paragraphs(_config.__doc__)],
        "Columns: **default** is the value when the key is left out; **reference** is the reference run's value "
        f"(`{REFERENCE_CONFIG}`), `=` where it is the default. Values are written as in YAML; list items show only "
        "their non-default keys. In a list's item section (`section[]`), **default** is an item's default and "
        "**reference** lists the value of each of the reference run's items, in order.",
        "",
        "Sections: " + ", ".join(f"[{s.path}{'[]' if s.is_list else ''}](#{anchors[s.path]})" for s in sections[1:]),
        "",
    ]
    for section in sections:
        level = "##" if section.path.count(".") == 0 else "###"
        out += [f"{level} {section.heading}", ""]
        out += [p + "\n" for p in _paragraphs(section.model.__dict__.get("__doc__"))]
        out += ["| key | type | default | reference | description |", "|---|---|---|---|---|"]
        out += [_row(section, name, field, anchors) for name, field in section.model.model_fields.items()]
        out.append("")
        if issubclass(section.model, TrainConfig) and not section.is_list:
            out += _passthrough(section.reference)
    return "\n".join(out).rstrip("\n") + "\n"


def check(path: str | Path, text: str | None = None) -> str | None:
    """None when the file at `path` is what the generator gives now (`text`, default: generated), else why not."""
    p = Path(path)
    if text is None:
        text = reference_markdown()
    if not p.is_file():
        return f"{p}: missing; generate it with `{REGENERATE}`"
    if p.read_text(encoding="utf-8") != text:
        return f"{p}: out of date with legibility/config.py or {REFERENCE_CONFIG}; regenerate with `{REGENERATE}`"
    return None


def main(argv: list[str] | None = None) -> int:
    """Print the config reference (Markdown), or with --check FILE exit 1 when FILE differs from it."""
    ap = argparse.ArgumentParser(prog="python -m legibility.config_reference", description=main.__doc__)
    ap.add_argument("--check", metavar="FILE", help="compare FILE (e.g. docs/config.md) instead of printing")
    ap.add_argument("--reference", metavar="YAML", help=f"the reference run's config (default {REFERENCE_CONFIG})")
    args = ap.parse_args(argv)
    text = reference_markdown(reference=args.reference)
    if args.check:
        problem = check(args.check, text)
        if problem:
            print(problem, file=sys.stderr)
            return 1
        return 0
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(encoding="utf-8")
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
