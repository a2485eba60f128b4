"""Business filters on retrieved candidates: availability, demographic, history, contextual.

All rules live in one pydantic config (`FilterConfig`) whose defaults are documented here and in the README.
A category rule names a category *segment* ("Knife Sets", "Men", "Clothing"): it matches every item whose
'Department|Group|Leaf' path contains that segment.

- availability: an item is shown only if arrival_date <= request time and stock_quantity > 0.
- demographic: categories with a minimum age are hidden from younger users (and from users of unknown age);
  gender-targeted categories are hidden from users whose known gender differs, unless one of the user's
  preferences names a segment of the item's category.
- history: items the user purchased (or rated) are hidden; `exclude` can add carted and viewed items.
- contextual: rules keyed on the request context (weekday/weekend and local hour of its timestamp, device,
  season) that boost a category (add `boost` to the score) or exclude it.

Rules run in that order; each reports how many candidates it removed from what the previous rules left.
`CompiledFilters` turns the config into per-category arrays once per catalogue, so applying the chain to a
few hundred candidates is a few numpy gathers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from recsys import schema
from recsys.item_catalogue import ItemCatalogue

HistoryKind = Literal["purchased", "carted", "viewed"]
RULE_NAMES = ("availability", "demographic", "history", "contextual")
NO_ROWS = np.empty(0, dtype=np.int64)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AvailabilityConfig(_Strict):
    enabled: bool = True


class DemographicConfig(_Strict):
    enabled: bool = True
    # knives are sold to adults only in many countries
    min_age_by_category: dict[str, int] = Field(default_factory=lambda: {"Knife Sets": 18})
    # gender values as the user data writes them (F / M)
    gender_by_category: dict[str, str] = Field(
        default_factory=lambda: {"Men": "M", "Colognes": "M", "Women": "F", "Perfumes": "F"}
    )


class HistoryConfig(_Strict):
    enabled: bool = True
    exclude: tuple[HistoryKind, ...] = ("purchased",)


class ContextRule(_Strict):
    """When every given condition holds, `action` applies to `categories`. Hours are [start, end) local time
    and may wrap midnight (22, 6)."""

    name: str
    categories: tuple[str, ...]
    action: Literal["boost", "exclude"] = "boost"
    boost: float = 0.05
    days: Literal["any", "weekday", "weekend"] = "any"
    hours: tuple[int, int] | None = None
    device: str | None = None
    season: str | None = None

    def active(self, moment: datetime, device: str | None, season: str | None) -> bool:
        weekend = moment.weekday() >= 5
        if self.days != "any" and (self.days == "weekend") != weekend:
            return False
        if self.hours is not None:
            start, end = self.hours
            hour = moment.hour
            inside = start <= hour < end if start <= end else (hour >= start or hour < end)
            if not inside:
                return False
        if self.device is not None and (device or "").lower() != self.device.lower():
            return False
        return self.season is None or (season or "").lower() == self.season.lower()


DEFAULT_CONTEXT_RULES: tuple[ContextRule, ...] = (
    ContextRule(name="weekend leisure", days="weekend", categories=("Toys & Games", "Camping", "Games")),
    ContextRule(name="office hours", days="weekday", hours=(9, 17), categories=("Office Products",)),
    ContextRule(name="late-night reading", hours=(22, 6), categories=("Books",)),
    ContextRule(name="on the phone", device="mobile", categories=("Mobile", "Audio")),
    ContextRule(name="winter wear", season="winter", categories=("Men's Jackets", "Boots")),
    ContextRule(name="no sunscreen in winter", season="winter", action="exclude", categories=("Sunscreens",)),
)


class ContextualConfig(_Strict):
    enabled: bool = True
    rules: tuple[ContextRule, ...] = DEFAULT_CONTEXT_RULES


class FilterConfig(_Strict):
    """Every filter rule of the online path, with documented defaults (see the module docstring)."""

    availability: AvailabilityConfig = AvailabilityConfig()
    demographic: DemographicConfig = DemographicConfig()
    history: HistoryConfig = HistoryConfig()
    contextual: ContextualConfig = ContextualConfig()


def load_filter_config(path: Path | None) -> FilterConfig:
    """The defaults, or the JSON FilterConfig in `path` (RECSYS_SERVING_FILTERS_FILE) replacing them."""
    return FilterConfig() if path is None else FilterConfig.model_validate(json.loads(Path(path).read_text()))


@dataclass(frozen=True)
class UserFacts:
    """What the filters know about the requester."""

    age: int | None = None
    gender: str | None = None
    preferences: frozenset[str] = frozenset()
    excluded_items: np.ndarray = field(default_factory=lambda: NO_ROWS)  # rows hidden by the history rule


@dataclass(frozen=True)
class FilterResult:
    rows: np.ndarray  # catalogue rows that survived, best first
    scores: np.ndarray  # their (boosted) scores
    removed: dict[str, int]  # rule name -> candidates it removed


def parse_preferences(text: str | None) -> frozenset[str]:
    if not text:
        return frozenset()
    return frozenset(p.strip() for p in text.split(schema.PREFERENCE_SEPARATOR) if p.strip())


class CompiledFilters:
    """A FilterConfig bound to one catalogue: per-category lookups precomputed."""

    def __init__(self, config: FilterConfig, catalogue: ItemCatalogue):
        self.config = config
        self.catalogue = catalogue
        segments = [frozenset(c.split(schema.CATEGORY_SEPARATOR)) for c in catalogue.categories]
        self._segments = segments
        demographic = config.demographic
        self._min_age = np.array(
            [max((a for s, a in demographic.min_age_by_category.items() if s in seg), default=0) for seg in segments],
            dtype=np.int64,
        )
        self._target_gender = [
            next((g for s, g in demographic.gender_by_category.items() if s in seg), None) for seg in segments
        ]
        self._rule_masks = [self._category_mask(rule.categories) for rule in config.contextual.rules]
        self._targeted_segments = frozenset(demographic.gender_by_category)
        # per-category arrays keyed by what they depend on; bounded because the keys come from requests
        self._gender_hidden: dict[tuple[str, frozenset[str]], np.ndarray] = {}
        self._context: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def _category_mask(self, names: tuple[str, ...]) -> np.ndarray:
        wanted = set(names)
        return np.array([bool(seg & wanted) for seg in self._segments], dtype=bool)

    def _demographic_keep(self, codes: np.ndarray, user: UserFacts) -> np.ndarray:
        min_age = self._min_age[codes]
        keep = min_age == 0 if user.age is None else min_age <= user.age
        if user.gender is None:
            return keep
        gender = user.gender.lower()
        key = (gender, user.preferences & self._targeted_segments)
        hidden = self._gender_hidden.get(key)
        if hidden is None:
            # per category: hidden when targeted at another gender and not preferred
            hidden = np.array(
                [
                    target is not None and target.lower() != gender and not (seg & user.preferences)
                    for target, seg in zip(self._target_gender, self._segments, strict=True)
                ],
                dtype=bool,
            )
            _remember(self._gender_hidden, key, hidden)
        return keep & ~hidden[codes]

    def _context_effects(self, moment: datetime, device: str | None, season: str | None):
        key = (moment.weekday() >= 5, moment.hour, (device or "").lower(), (season or "").lower())
        effects = self._context.get(key)
        if effects is None:
            effects = self._compute_context_effects(moment, device, season)
            _remember(self._context, key, effects)
        return effects

    def _compute_context_effects(self, moment: datetime, device: str | None, season: str | None):
        n = len(self.catalogue.categories)
        boost = np.zeros(n, dtype=np.float32)
        excluded = np.zeros(n, dtype=bool)
        for rule, mask in zip(self.config.contextual.rules, self._rule_masks, strict=True):
            if rule.active(moment, device, season):
                if rule.action == "exclude":
                    excluded |= mask
                else:
                    boost[mask] += rule.boost
        return boost, excluded

    def apply(
        self,
        rows: np.ndarray,
        scores: np.ndarray,
        user: UserFacts,
        moment: datetime,
        device: str | None = None,
        season: str | None = None,
    ) -> FilterResult:
        """Run the chain over candidate rows (any order); survivors come back sorted by boosted score."""
        cat = self.catalogue
        cfg = self.config
        codes = cat.category_codes[rows]
        keep = np.ones(len(rows), dtype=bool)
        removed = dict.fromkeys(RULE_NAMES, 0)

        def drop(rule: str, allowed: np.ndarray) -> None:
            nonlocal keep
            removed[rule] = int(np.count_nonzero(keep & ~allowed))
            keep &= allowed

        if cfg.availability.enabled:
            now_ns = int(moment.timestamp() * 1e9)
            drop("availability", (cat.arrival_ns[rows] <= now_ns) & (cat.stock[rows] > 0))
        if cfg.demographic.enabled:
            drop("demographic", self._demographic_keep(codes, user))
        if cfg.history.enabled and len(user.excluded_items):
            drop("history", ~np.isin(rows, user.excluded_items))
        boosted = scores.astype(np.float32, copy=True)
        if cfg.contextual.enabled and cfg.contextual.rules:
            boost, excluded = self._context_effects(moment, device, season)
            drop("contextual", ~excluded[codes])
            boosted += boost[codes]
        survivors = np.flatnonzero(keep)
        order = survivors[np.argsort(-boosted[survivors], kind="stable")]
        return FilterResult(rows=rows[order], scores=boosted[order], removed=removed)


CACHE_ENTRIES = 1024


def _remember(cache: dict, key, value) -> None:
    if len(cache) >= CACHE_ENTRIES:  # request-driven keys: start over rather than grow without bound
        cache.clear()
    cache[key] = value
