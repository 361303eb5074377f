"""Set-based statements: many rows in one statement, as one array parameter per column."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import BindParameter, Column, TableValuedAlias, bindparam, column, func
from sqlalchemy.dialects.postgresql import ARRAY


def array_param(target: Column[Any], name: str) -> BindParameter[Any]:
    """A placeholder for a list of ``target`` values (one PostgreSQL array)."""
    return bindparam(name, type_=ARRAY(target.type))


def unnest_params(name: str, *targets: Column[Any]) -> TableValuedAlias:
    """Rows ``name`` from one array parameter per column, named ``<name>_<column>``."""
    arrays = (array_param(target, f"{name}_{target.key}") for target in targets)
    return (
        func.unnest(*arrays)
        .table_valued(*(column(target.key, target.type) for target in targets))
        .render_derived(name=name)
    )


def unnest_rows(
    name: str, values: Sequence[Sequence[Any]], *targets: Column[Any]
) -> dict[str, Any]:
    """The parameters of ``unnest_params(name, *targets)`` for ``values``, one tuple per row."""
    columns = list(zip(*values, strict=True)) if values else [() for _ in targets]
    return {f"{name}_{target.key}": list(col) for target, col in zip(targets, columns, strict=True)}
