"""Typed errors. Each carries enough context for the CLI to print what went wrong, where, and the fix."""

from __future__ import annotations

from dataclasses import dataclass, field


class TlcError(Exception):
    """Base class for every error the CLI reports without a traceback."""


@dataclass
class RecipeProblem:
    """One problem found in a recipe file."""

    path: str  # dotted YAML path, e.g. "models.sizes[1].hidden"
    message: str
    line: int | None = None  # 1-based line in the YAML file, when known
    column: int | None = None
    hint: str | None = None

    def format(self, file: str | None = None) -> str:
        where = file or "<recipe>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        text = f"{where}: {self.path or '<root>'}: {self.message}"
        if self.hint:
            text += f"\n    hint: {self.hint}"
        return text


@dataclass
class RecipeError(TlcError):
    """A recipe failed to parse or validate; lists every problem at once."""

    file: str | None
    problems: list[RecipeProblem] = field(default_factory=list)

    def __str__(self) -> str:
        head = f"{self.file or 'recipe'}: {len(self.problems)} problem(s)"
        return head + "\n" + "\n".join("  " + p.format(self.file) for p in self.problems)


class DataSourceError(TlcError):
    """A data source could not be fetched or parsed; the message names the source and the local-file alternative."""


class StageError(TlcError):
    """A pipeline stage failed or its inputs are missing."""


@dataclass
class OutputMismatch:
    """One output of an exported model compared against the reference."""

    name: str
    max_abs_diff: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance


@dataclass
class ExportMismatchError(TlcError):
    """An exported artifact disagrees with its reference PyTorch model beyond tolerance."""

    artifact: str
    outputs: list[OutputMismatch]

    def __str__(self) -> str:
        lines = [f"{self.artifact}: exported model does not match the reference"]
        for o in self.outputs:
            flag = "ok" if o.ok else "MISMATCH"
            lines.append(
                f"  {o.name}: max |diff| {o.max_abs_diff:.3g} (tolerance {o.tolerance:.3g}) {flag}"
            )
        return "\n".join(lines)


class BackendUnavailable(TlcError):
    """A runtime (CUDA, TensorRT, ...) is not present; callers record the reason and go on."""


class PlanError(TlcError):
    """Bad `tlc plan` input, or a plan that cannot be checked against a run: names the option and what to change."""
