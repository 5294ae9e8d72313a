"""Reason codes: why each row got its probability.

The model is linear in its variables and has no intercept, so a row's logit is exactly the sum
of one contribution per variable: coefficient × scaled value for a numeric variable (after
imputation and scaling, as scored), and for a dummy its coefficient when its level is the row's,
else 0. A row's reasons are those contributions, largest in absolute value first, ties broken by
variable name.
"""

from __future__ import annotations

import gc
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from lib.core.schema import LEVELS, kind_of
from lib.core.scorer import Scores, ScoringPlan, numeric_terms

METHOD = ("Each reason is one variable's term of the row's logit (coefficient × scaled value for a "
          "numeric variable, the coefficient of the present level for a dummy, 0 for an absent one); "
          "the model has no intercept, so the terms of all variables add up to the logit.")
RAISES, LOWERS, NEUTRAL = "raises", "lowers", "none"
# Indexed by the sign of a contribution plus one.
_DIRECTIONS = np.array([LOWERS, NEUTRAL, RAISES], dtype=object)


@dataclass(frozen=True)
class Explainer:
    """The variables of one plan in name order, with what computing their contributions needs."""

    plan: ScoringPlan

    @cached_property
    def variables(self) -> tuple[str, ...]:
        """Every model variable, sorted by name (the order that breaks ties)."""
        return tuple(sorted((*self.plan.numeric_columns, *(name for name, _, _ in self.plan.dummies))))

    @cached_property
    def columns(self) -> tuple[str, ...]:
        """The raw column of each variable of ``variables``."""
        column_of = {**{c: c for c in self.plan.numeric_columns}, **{v: c for v, c, _ in self.plan.dummies}}
        return tuple(column_of[v] for v in self.variables)

    def contributions(self, scores: Scores) -> np.ndarray:
        """Rows × ``variables``: each variable's term of each row's logit."""
        plan, position = self.plan, {v: j for j, v in enumerate(self.variables)}
        terms = np.zeros((len(scores.probabilities), len(self.variables)))
        if plan.numeric_columns:
            # The scorer's own terms, so that they add up to the logit it computed.
            terms[:, [position[c] for c in plan.numeric_columns]] = numeric_terms(plan, scores.numeric)
        for variable, column, code in plan.dummies:
            coef = plan.categorical_tables[column][code]
            terms[:, position[variable]] = np.where(scores.codes[column] == code, coef, 0.0)
        return terms

    def reasons(self, scores: Scores, top: int, skip: Collection[int] = ()) -> list[list[dict] | None]:
        """The ``top`` largest contributions of each row as reason objects; None for rows in ``skip``.

        Each reason: ``variable``, ``column``, ``value`` (the normalised input: a number, the
        row's level for a dummy, None where the cell was missing and imputed), ``contribution``
        and ``direction`` (``raises``, ``lowers``, or ``none`` for a contribution of exactly 0).
        """
        with _no_cyclic_collection():
            terms = self.contributions(scores)
            # A stable sort of columns already in name order: equal magnitudes stay by name.
            order = np.argsort(-np.abs(terms), axis=1, kind="stable")[:, :top]
            chosen = np.take_along_axis(terms, order, axis=1)
            # Every field picked out for every row by numpy; Python only assembles the objects.
            fields = zip(
                self._names[order].tolist(),
                self._columns[order].tolist(),
                np.take_along_axis(self._values(scores), order, axis=1).tolist(),
                chosen.tolist(),
                _DIRECTIONS[np.sign(chosen).astype(np.intp) + 1].tolist(),
                strict=True,
            )
            skipped = set(skip)
            return [
                None if i in skipped else [
                    {"variable": v, "column": c, "value": x, "contribution": t, "direction": d}
                    for v, c, x, t, d in zip(*row, strict=True)
                ]
                for i, row in enumerate(fields)
            ]

    @cached_property
    def _names(self) -> np.ndarray:
        return np.array(self.variables, dtype=object)

    @cached_property
    def _columns(self) -> np.ndarray:
        return np.array(self.columns, dtype=object)

    def _values(self, scores: Scores) -> np.ndarray:
        """Rows × ``variables`` (objects): each row's normalised input value of each variable's column."""
        numeric = {c: j for j, c in enumerate(self.plan.numeric_columns)}
        values = np.empty((len(scores.probabilities), len(self.variables)), dtype=object)
        by_column: dict[str, np.ndarray] = {}  # a column's dummies share its values
        for k, column in enumerate(self.columns):
            if column not in by_column:
                if column in numeric:
                    cells = scores.numeric[:, numeric[column]]
                    by_column[column] = np.where(np.isnan(cells), None, cells.astype(object))
                else:
                    levels = np.array([*LEVELS[kind_of(column)], None], dtype=object)
                    by_column[column] = levels[scores.codes[column]]
            values[:, k] = by_column[column]
        return values


@contextmanager
def _no_cyclic_collection() -> Iterator[None]:
    """Pause the cyclic garbage collector: reasons are up to millions of small lists and dicts,
    none in a cycle, and each collection it would start meanwhile walks every object the
    process holds (a 10,000-row request's decoded body among them)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
