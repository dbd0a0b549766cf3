"""The recipe: one YAML file describing a whole experiment, validated with every problem reported at once."""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from tlc_export.config.bench import BenchConfig, ReportConfig
from tlc_export.config.common import Section, section_type
from tlc_export.config.compress import CompressConfig
from tlc_export.config.data import DataConfig, TokenizerConfig
from tlc_export.config.export import ExportConfig
from tlc_export.config.finetune import FinetuneConfig
from tlc_export.config.models import ModelsConfig
from tlc_export.config.pretrain import PretrainConfig
from tlc_export.config.sweep import SweepConfig
from tlc_export.config.translation import BENCH_BACKENDS as TRANSLATION_BENCH_BACKENDS
from tlc_export.config.translation import EXPORT_FORMATS as TRANSLATION_EXPORT_FORMATS
from tlc_export.config.translation import TranslationConfig
from tlc_export.errors import RecipeError, RecipeProblem


class Recipe(Section):
    """A whole experiment: data → tokenizer → models → pretrain → finetune → compress → export → bench → report."""

    name: str = Field(default="experiment", description="A name for the run, used in reports.")
    data: DataConfig = Field(default_factory=DataConfig, description="Pretraining corpus.")
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig, description="BPE tokenizer trained on the corpus.")
    # Required for the classification pipeline, absent in a translation recipe: `validate_data` checks
    # which sections each kind of recipe needs and reports them at their lines.
    models: ModelsConfig | None = Field(default=None, description="The grid of model sizes (required unless `translation`).")
    pretrain: PretrainConfig | None = Field(
        default=None, description="Wall-clock-budgeted masked-LM pretraining (required unless `translation`)."
    )
    finetune: FinetuneConfig | None = Field(default=None, description="Downstream finetuning (omit to stop after pretraining).")
    compress: CompressConfig | None = Field(
        default=None, description="Pruning and quantization (needs finetune, or translation for translation models)."
    )
    export: ExportConfig | None = Field(
        default=None, description="ONNX / TensorRT export (needs compress; translation models: ONNX formats only)."
    )
    bench: BenchConfig | None = Field(default=None, description="Runtime benchmark (needs export).")
    report: ReportConfig | None = Field(default=None, description="Final report (needs bench).")
    translation: TranslationConfig | None = Field(
        default=None,
        description="Machine translation instead of masked-LM pretraining + classification (the paper's second "
        "system): parallel data, sizes, budget and decoding in one section. Replaces data, tokenizer, models, "
        "pretrain and finetune.",
    )
    sweep: SweepConfig | None = Field(
        default=None,
        description="Run the recipe once per point of a grid of field values (the paper's ablations); "
        "see `tlc sweep list`. Each point's own recipe has no sweep.",
    )

    @model_validator(mode="after")
    def _chain(self) -> Recipe:
        # A translation recipe's models come from its `translation` section, a classification one's from finetune.
        order = ["translation" if self.translation is not None else "finetune", "compress", "export", "bench", "report"]
        present = [getattr(self, k) is not None for k in order]
        for i in range(1, len(order)):
            if present[i] and not present[i - 1]:
                raise ValueError(f"section `{order[i]}` needs section `{order[i - 1]}` before it")
        if self.finetune is not None and self.finetune.max_length > self.data.max_seq_len:
            raise ValueError(
                f"finetune.max_length={self.finetune.max_length} exceeds data.max_seq_len={self.data.max_seq_len}, "
                "the longest position the models are built for"
            )
        return self

    # Where the recipe file lives; relative data paths resolve against it. Not part of the schema.
    _base_dir: Path = Path(".")

    @property
    def base_dir(self) -> Path:
        return self._base_dir

    def resolve_path(self, p: str) -> Path:
        path = Path(p).expanduser()
        return path if path.is_absolute() else (self._base_dir / path)

    def section_hash(self, *sections: str) -> str:
        """Stable hash of some sections' resolved values (used in cache keys and artifact metadata)."""
        payload = {s: _dump(getattr(self, s)) for s in sections}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def resolved_yaml(self) -> str:
        """The recipe with every default filled in, as YAML (saved next to artifacts). A translation recipe
        leaves out the pretraining corpus and tokenizer sections it has no use for (they have defaults)."""
        skip = {"data", "tokenizer"} if self.translation is not None else set()
        return yaml.safe_dump(self.model_dump(mode="json", by_alias=True, exclude=skip), sort_keys=False)


def _dump(obj: Any) -> Any:
    if obj is None:
        return None
    return obj.model_dump(mode="json") if hasattr(obj, "model_dump") else obj


# --- loading with line numbers -------------------------------------------------------------


def _node_at(root: yaml.Node | None, loc: tuple[Any, ...]) -> yaml.Node | None:
    """Walk a composed YAML node tree along a pydantic error location; return the deepest node found."""
    node = root
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == str(key):
                    nxt = v
                    break
            if nxt is None:
                return node
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int):
            if key >= len(node.value):
                return node
            node = node.value[key]
        else:
            return node
    return node


def _key_node(root: yaml.Node | None, loc: tuple[Any, ...]) -> yaml.Node | None:
    """For 'extra key' errors: the node of the key itself, so the line points at the typo."""
    parent = _node_at(root, loc[:-1])
    if isinstance(parent, yaml.MappingNode):
        for k, _v in parent.value:
            if isinstance(k, yaml.ScalarNode) and k.value == str(loc[-1]):
                return k
    return None


def _loc_str(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


_HINTS = {
    "extra_forbidden": "unknown key: check its spelling; `tlc recipe-schema` lists every field",
    "missing": "this field is required; `tlc recipe-schema` documents it",
    "literal_error": "use one of the listed values",
    "greater_than": "use a larger value",
    "greater_than_equal": "use a larger value",
    "less_than": "use a smaller value",
    "less_than_equal": "use a smaller value",
    "int_parsing": "use a whole number",
    "int_from_float": "use a whole number",
    "float_parsing": "use a number",
    "bool_parsing": "use true or false",
    "too_short": "give at least one entry",
}


# Keys that existed once: a specific message instead of "unknown key".
_REMOVED = {
    "compress.eval_split": (
        "`compress.eval_split` was removed: dev selects (checkpoints, recovery, lr, seed) and test reports "
        "(verdict, frontier, answer tables), always; both accuracies are recorded for every variant",
        "delete this line",
    ),
}


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """The keys the section at `loc` takes (for "did you mean"); [] where the walk is not certain."""
    model: type[Section] = Recipe
    for key in loc:
        if isinstance(key, int):
            continue
        field = model.model_fields.get(str(key)) or next(
            (f for f in model.model_fields.values() if f.alias == str(key)), None)
        sub = section_type(field.annotation) if field is not None else None
        if sub is None:
            return []
        model = sub
    return [f.alias or name for name, f in model.model_fields.items()]


def similar_files(path: Path) -> list[Path]:
    """Existing files whose name is close to a missing `path`'s, beside it or in a `recipes/` folder there."""
    folders = [path.parent, path.parent / "recipes"]
    names: dict[str, Path] = {}
    for d in folders:
        try:
            for p in d.iterdir():
                if p.is_file():
                    names.setdefault(p.name, p)
        except OSError:
            continue
    stem_hits = [p for p in names.values() if p.stem == path.stem and p != path]
    close = [names[n] for n in difflib.get_close_matches(path.name, list(names), n=3, cutoff=0.75)]
    out: list[Path] = []
    for p in stem_hits + close:
        if p not in out:
            out.append(p)
    return out[:3]


def missing_file_hint(path: Path, default: str) -> str:
    found = similar_files(path)
    return f"did you mean {' or '.join(str(p) for p in found)}?" if found else default


def _problems_from_validation(err: ValidationError, root: yaml.Node | None) -> list[RecipeProblem]:
    problems = []
    for e in err.errors():
        # pydantic puts union/tag members and validator names into loc; keep only real keys.
        loc = tuple(p for p in e["loc"] if isinstance(p, int) or not str(p).startswith(("function-", "union[")))
        node = _key_node(root, loc) if e["type"] == "extra_forbidden" and loc else _node_at(root, loc)
        line = node.start_mark.line + 1 if node is not None else None
        col = node.start_mark.column + 1 if node is not None else None
        msg = e["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        hint = _HINTS.get(e["type"])
        if e["type"] == "extra_forbidden":
            msg = f"unknown key `{loc[-1]}`"
            close = difflib.get_close_matches(str(loc[-1]), _fields_at(loc[:-1]), n=1, cutoff=0.6)
            if close:
                msg += f"; did you mean `{close[0]}`?"
            if _loc_str(loc) in _REMOVED:
                msg, hint = _REMOVED[_loc_str(loc)]
        problems.append(RecipeProblem(path=_loc_str(loc), message=msg, line=line, column=col, hint=hint))
    return problems


def load_yaml(text: str, file: str | None) -> tuple[yaml.Node | None, dict[str, Any]]:
    """The composed node tree (for line numbers) and the plain data of a recipe text."""
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError(
            file,
            [RecipeProblem(
                path="",
                message=f"malformed YAML: {problem}",
                line=mark.line + 1 if mark else None,
                column=mark.column + 1 if mark else None,
                hint="fix the YAML syntax at that position (indentation, a missing ':' or an unclosed quote)",
            )],
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(file, [RecipeProblem(path="", message="a recipe must be a YAML mapping of sections", line=1, hint="start with `models:` and `pretrain:`")])
    return root, data


# Sections a translation recipe replaces (its own `translation` section holds their counterparts), and
# the stages that do not take translation models yet.
_TRANSLATION_REPLACES = ("data", "tokenizer", "models", "pretrain", "finetune")


def _kind_problems(data: dict[str, Any], root: yaml.Node | None) -> list[RecipeProblem]:
    """Which sections this kind of recipe needs or must not have (classification: models and pretrain;
    translation: none of the sections it replaces)."""
    problems = []

    def line(key: str) -> int | None:
        node = _key_node(root, (key,)) or _node_at(root, (key,))
        return node.start_mark.line + 1 if node is not None else None

    if data.get("translation") is not None:
        for key in _TRANSLATION_REPLACES:
            if data.get(key) is not None:  # a resolved recipe writes the absent ones as null
                problems.append(RecipeProblem(
                    key, f"a translation recipe has no `{key}` section", line(key),
                    hint="its data, vocabulary, sizes and training budget go under `translation` (`tlc recipe-schema`)"))
        for key, field, allowed in (("export", "formats", TRANSLATION_EXPORT_FORMATS),
                                    ("bench", "backends", TRANSLATION_BENCH_BACKENDS)):
            section = data.get(key)
            values = section.get(field) if isinstance(section, dict) else None
            bad = [v for v in values or [] if v not in allowed]
            if bad:
                problems.append(RecipeProblem(
                    f"{key}.{field}", f"translation models have no {', '.join(map(str, bad))}", line(key),
                    hint=f"a translation recipe's {key}.{field} takes {', '.join(allowed)}"))
        return problems
    for key in ("models", "pretrain"):
        if data.get(key) is None:
            problems.append(RecipeProblem(key, "Field required", line(key), hint=_HINTS["missing"]))
    return problems


def validate_data(data: dict[str, Any], root: yaml.Node | None, base_dir: Path | None) -> tuple[Recipe | None, list[RecipeProblem]]:
    """Validate one recipe's plain data; the problems carry lines from `root` (the file's node tree)."""
    kind = _kind_problems(data, root)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as err:
        return None, kind + _problems_from_validation(err, root) + _raw_file_problems(data, root, base_dir or Path("."))
    if kind:
        return None, kind
    problems = _semantic_problems(recipe, root, base_dir)
    if problems:
        return None, problems
    recipe._base_dir = base_dir or Path(".")
    return recipe, []


def parse_recipe(text: str, file: str | None = None, base_dir: Path | None = None) -> Recipe:
    """Parse and validate recipe YAML text; raise RecipeError listing every problem.

    A sweep recipe is many runs, not one: `tlc_export.sweep.plan.parse_plan` reads it (and `parse_point`
    one point of it).
    """
    root, data = load_yaml(text, file)
    if data.get("sweep") is not None:
        node = _key_node(root, ("sweep",))
        raise RecipeError(file, [RecipeProblem(
            path="sweep", message="this recipe is a sweep, not one run", line=node.start_mark.line + 1 if node else None,
            hint="run every point with `tlc run RECIPE`, one with `tlc run RECIPE --point K` "
            "(`tlc sweep list RECIPE` prints them)")])
    recipe, problems = validate_data(data, root, base_dir)
    if problems:
        raise RecipeError(file, problems)
    assert recipe is not None
    return recipe


def _semantic_problems(recipe: Recipe, root: yaml.Node | None, base_dir: Path | None) -> list[RecipeProblem]:
    """Checks that need more than one field or the file system."""
    problems: list[RecipeProblem] = []

    def add(loc: tuple[Any, ...], msg: str, hint: str) -> None:
        node = _node_at(root, loc)
        problems.append(RecipeProblem(_loc_str(loc), msg, node.start_mark.line + 1 if node else None, None, hint))

    base = base_dir or Path(".")
    problems += _file_problems(list(enumerate(recipe.data.sources)), recipe.finetune.task if recipe.finetune else None,
                               root, base)
    if recipe.export is not None and recipe.export.sparsity is not None and recipe.compress is not None:
        missing = [s for s in recipe.export.sparsity if not any(abs(s - t) < 1e-9 for t in recipe.compress.prune.sparsity)]
        if missing:
            add(("export", "sparsity"), f"levels {missing} are not in compress.prune.sparsity", "export only levels the compress stage saves")
    if (recipe.finetune is not None and recipe.finetune.start_from != "final" and recipe.pretrain is not None
            and not recipe.pretrain.keep_checkpoints_at):
        add(("finetune", "from"), f"finetune.from: {recipe.finetune.start_from} needs checkpoints kept during pretraining",
            "set pretrain.keep_checkpoints_at, e.g. [0.25, 0.5, 1.0]")
    if recipe.export is not None and recipe.export.int4_block_size & (recipe.export.int4_block_size - 1):
        add(("export", "int4_block_size"), f"{recipe.export.int4_block_size} is not a power of two", "use 16, 32, 64 or 128")
    return problems


def _file_problems(sources: list[tuple[int, Any]], task: Any, root: yaml.Node | None, base: Path) -> list[RecipeProblem]:
    """The local files a recipe names: every corpus source (`(index, TextSource)`) and the task (`TaskConfig`)."""
    problems: list[RecipeProblem] = []

    def add(loc: tuple[Any, ...], msg: str, hint: str | None) -> None:
        node = _node_at(root, loc)
        problems.append(RecipeProblem(_loc_str(loc), msg, node.start_mark.line + 1 if node else None, None, hint))

    def resolve(path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else base / p

    relative = "give a path relative to the recipe file, or an absolute one"
    for i, src in sources:
        if src.kind in ("text", "csv", "jsonl") and src.path:
            _source_problems(i, src, resolve(src.path), base, add, relative)
    if task is not None and task.kind in ("csv", "jsonl"):
        p = resolve(task.path or "")
        if not p.exists():
            add(("finetune", "task", "path"), f"file not found: {p}", missing_file_hint(p, relative))
        else:
            _task_problems(task, base, add)
    return problems


def _raw_file_problems(data: dict[str, Any], root: yaml.Node | None, base: Path) -> list[RecipeProblem]:
    """The file checks for a recipe whose fields have errors: each source and the task that validate on their
    own are checked anyway, so one run of `tlc validate` lists every problem."""
    from tlc_export.config.data import TextSource
    from tlc_export.config.finetune import TaskConfig

    def valid(model: Any, raw: Any) -> Any:
        try:
            return model.model_validate(raw) if isinstance(raw, dict) else None
        except ValidationError:
            return None

    section = data.get("data")
    raw_sources = section.get("sources") if isinstance(section, dict) else None
    sources = [(i, s) for i, raw in enumerate(raw_sources if isinstance(raw_sources, list) else [])
               if (s := valid(TextSource, raw)) is not None]
    ft = data.get("finetune")
    task = valid(TaskConfig, ft.get("task")) if isinstance(ft, dict) else None
    return _file_problems(sources, task, root, base)


def _source_problems(i: int, src: Any, full: Path, base: Path, add: Any, relative: str) -> None:
    """A local corpus source: its glob matches a file, and a table has the columns the source names."""
    import stat

    from tlc_export.data.local import iter_rows, resolve_glob
    from tlc_export.errors import DataSourceError

    loc = ("data", "sources", i)
    try:
        files = resolve_glob(str(src.path), base, field=f"data.sources[{i}].path")
    except DataSourceError:
        glob_like = any(ch in str(src.path) for ch in "*?[")
        what = f"no file matches {src.path!r} (looked for {full})" if glob_like else f"file not found: {full}"
        add((*loc, "path"), what, relative if glob_like else missing_file_hint(full, relative))
        return
    if src.kind not in ("csv", "jsonl") or stat.S_ISFIFO(files[0].stat().st_mode):
        return  # a named pipe would lose what validation read from it
    try:
        first = next(iter(iter_rows(files[0], src.kind)), None)
    except (DataSourceError, UnicodeDecodeError) as exc:
        add((*loc, "path"), f"{files[0]}: cannot read its first row ({exc})", "give a UTF-8 CSV with a header row, or JSON lines")
        return
    if first is None:
        add((*loc, "path"), f"{files[0]}: the file has no rows", "give a file with a header row and at least one row")
        return
    for field in ("column", "id_column"):
        col = getattr(src, field)
        if col and col not in first:
            add((*loc, field), f"{files[0]}: no column {col!r} (columns: {', '.join(map(repr, first))})",
                f"set data.sources[{i}].{field} to one of the file's columns")


class _Paths:
    """What `load_task` asks of a recipe for a local file: paths resolved against the recipe's folder."""

    def __init__(self, base: Path) -> None:
        self.base = base

    def resolve_path(self, p: str) -> Path:
        path = Path(p).expanduser()
        return path if path.is_absolute() else self.base / path


def _task_problems(task: Any, base: Path, add: Any) -> None:
    """A local task file: it reads, has the columns the task names, and gives three non-empty splits."""
    import re

    from tlc_export.data.task import load_task
    from tlc_export.errors import DataSourceError

    try:
        load_task(task, _Paths(base))  # type: ignore[arg-type]
    except (DataSourceError, UnicodeDecodeError) as exc:
        msg = str(exc).removeprefix("finetune.task: ")
        named = re.search(r"\(from `finetune\.task\.(\w+)`\)", msg)
        hint: str | None
        if named:
            loc: tuple[Any, ...] = ("finetune", "task", named.group(1))
            hint = None  # the message says which columns there are and what to set
        elif "empty split" in msg:
            loc, hint = ("finetune", "task"), None
        else:
            loc, hint = ("finetune", "task", "path"), "fix the file (a UTF-8 CSV with a header row, or JSON lines)"
        add(loc, msg, hint)


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file (a sweep's points: `tlc_export.sweep.plan.load_plan`)."""
    path = Path(path)
    if not path.exists():
        raise RecipeError(str(path), [RecipeProblem("", "file not found",
                                                    hint=missing_file_hint(path, "check the path to the recipe YAML"))])
    return parse_recipe(path.read_text(encoding="utf-8"), file=str(path), base_dir=path.resolve().parent)


def schema_lines(model: type[Section] = Recipe, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(path, type, default, description) for every field, nested sections expanded."""
    rows: list[tuple[str, str, str, str]] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{field.alias or name}"
        ann = field.annotation
        sub = section_type(ann)
        default = "required" if field.is_required() else (
            "(computed)" if field.default_factory is not None else repr(field.default)
        )
        tname = getattr(ann, "__name__", None) or str(ann).replace("typing.", "")
        rows.append((path, tname, default, field.description or ""))
        if sub is not None:
            list_like = "list[" in str(ann)
            rows.extend(schema_lines(sub, path + ("[]." if list_like else ".")))
    return rows
