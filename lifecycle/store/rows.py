"""Rows written directly, with the loaded objects kept as the rows now are.

Every step runs the transition path. Through the session's flush one small write costs
several times its statement (docs/performance.md), so the engine and the effects write their
rows with these, and tell the session what the rows now hold: nothing is left to flush.
"""

from __future__ import annotations

from functools import cache
from typing import Any, TypeVar

from sqlalchemy import Delete, Insert, Table, Update, bindparam, delete, insert, inspect, update
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from lifecycle.store.models import Base

Row = TypeVar("Row", bound=Base)


def change(session: Session, row: Base, **values: Any) -> None:
    """Write values into the row's columns; the object shows them."""
    parameters = {f"new_{key}": value for key, value in values.items()}
    statement = _update(_table(row), tuple(values))
    session.connection().execute(statement, {"row_id": _id(row), **parameters})
    for key, value in values.items():
        set_committed_value(row, key, value)


def add(session: Session, row: Row, *, to: tuple[Base, str] | None = None) -> Row:
    """Insert a new object's row; the object joins the session as if it had been loaded.

    to: the parent and its collection that the new object belongs in.
    """
    table = _table(row)
    values = {}
    for column in table.columns:
        if column.primary_key:
            continue
        if column.key not in row.__dict__:  # not given: the column's default, as an INSERT
            default = column.default
            assert default is None or default.is_scalar, f"{column}: only plain defaults"
            setattr(row, column.key, getattr(default, "arg", None))
        values[column.key] = getattr(row, column.key)
    key = _primary_key(table)
    setattr(row, key, session.connection().execute(_insert(table), values).scalar_one())
    make_transient_to_detached(row)
    session.add(row)
    if to is not None:
        parent, collection = to
        set_committed_value(parent, collection, [*getattr(parent, collection), row])
    return row


def remove(session: Session, row: Base, *, of: tuple[Base, str] | None = None) -> None:
    """Delete the row; the object leaves the session (and the parent's collection)."""
    session.connection().execute(_delete(_table(row)), {"row_id": _id(row)})
    session.expunge(row)
    if of is not None:
        parent, collection = of
        kept = [item for item in getattr(parent, collection) if item is not row]
        set_committed_value(parent, collection, kept)


def _table(row: Base) -> Table:
    table = inspect(row).mapper.local_table
    assert isinstance(table, Table)
    return table


def _primary_key(table: Table) -> str:
    (column,) = table.primary_key.columns
    return column.key


def _id(row: Base) -> Any:
    return getattr(row, _primary_key(_table(row)))


@cache
def _update(table: Table, keys: tuple[str, ...]) -> Update:
    return (
        update(table)
        .where(table.c[_primary_key(table)] == bindparam("row_id"))
        .values({key: bindparam(f"new_{key}") for key in keys})
    )


@cache
def _insert(table: Table) -> Insert:
    return insert(table).returning(table.c[_primary_key(table)])


@cache
def _delete(table: Table) -> Delete:
    return delete(table).where(table.c[_primary_key(table)] == bindparam("row_id"))
