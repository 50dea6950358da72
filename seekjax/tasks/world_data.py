"""Clean country records from the ``countryinfo`` package, loaded once per process.

countryinfo has gaps and odd entries: missing or empty capitals, a capital given as a
list, "A / B / C" capitals, duplicate and historical entries, fund codes among the
currencies, a few wrong language codes, missing populations. ``load_countries`` keeps
only entries with a name, an ISO alpha-3 code and a population > 0, and keeps each
field only when it is clean (e.g. a country without a clean capital still has
currency questions). Every answer carries sensible aliases (currency name, short
name, ISO code; former country names; accent-free spellings come from scoring).

Popularity is log10(population); ``HEAD_POPULARITY`` splits head from tail.
"""
from __future__ import annotations

import dataclasses
import functools
import math

from seekjax.tasks import world_codes as codes

HEAD_POPULARITY = 7.0  # log10 population: countries of >= 10 million people are "head"


@dataclasses.dataclass(frozen=True)
class Currency:
  code: str
  name: str
  aliases: tuple[str, ...]  # name first, then short name and codes


@dataclasses.dataclass(frozen=True)
class Country:
  """One cleaned country; optional fields are None/empty when countryinfo lacks them."""

  code: str  # ISO 3166 alpha-3
  name: str
  aliases: tuple[str, ...]  # name first
  capital: str | None
  capital_aliases: tuple[str, ...]  # capital first; () when no capital
  currencies: tuple[Currency, ...]
  languages: tuple[str, ...]
  region: str | None
  subregion: str | None
  intermediate_region: str | None
  neighbours: tuple[str, ...]  # alpha-3 codes of kept countries, sorted, mutual
  population: int
  area: float | None  # km^2
  popularity: float  # log10(population)

  @property
  def is_head(self) -> bool:
    """True when popularity >= HEAD_POPULARITY (10 million people or more)."""
    return self.popularity >= HEAD_POPULARITY


def _clean_str(value) -> str | None:
  """Returns a stripped non-empty string, the single element of a 1-list, or None."""
  if isinstance(value, list) and len(value) == 1:
    value = value[0]
  if not isinstance(value, str):
    return None
  value = value.strip()
  return value or None


def _capital(raw: dict) -> tuple[str | None, tuple[str, ...]]:
  """Returns (capital, aliases); None for missing, empty or multi-city ("A / B") capitals."""
  capital = _clean_str(raw.get("capital"))
  if capital is None or "/" in capital:
    return None, ()
  capital, extra = codes.CAPITAL_RENAMES.get(capital, (capital, ()))
  aliases = (capital,) + tuple(extra) + codes.CAPITAL_ALIASES.get(capital, ())
  return capital, tuple(dict.fromkeys(aliases))


def _currency(code: str) -> Currency | None:
  """Returns the Currency for an ISO 4217 code, or None for fund/unknown codes."""
  name = codes.CURRENCY_NAMES.get(code)
  if name is None:
    return None
  short = name.split()[-1]
  aliases = [name, code]
  if len(name.split()) > 1 and short.lower() not in codes.GENERIC_CURRENCY_UNITS:
    aliases.insert(1, short)
  aliases += codes.CURRENCY_EXTRA_ALIASES.get(code, ())
  return Currency(code, name, tuple(dict.fromkeys(aliases)))


def _languages(raw: dict, alpha3: str) -> tuple[str, ...]:
  """Returns the English names of a raw entry's languages (unknown codes dropped)."""
  names = []
  for lang in raw.get("languages") or []:
    if not isinstance(lang, str):
      continue
    name = codes.LANGUAGE_FIXES.get((alpha3, lang)) or codes.LANGUAGE_NAMES.get(lang)
    if name:
      names.append(name)
  return tuple(dict.fromkeys(names))


def _positive_number(value) -> float | None:
  """Returns value as a float if it is a finite number > 0, else None."""
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return None
  return float(value) if math.isfinite(value) and value > 0 else None


def _completeness(raw: dict) -> int:
  """Returns how many of the main fields a raw entry fills (for de-duplication)."""
  return sum(bool(raw.get(k)) for k in ("capital", "currencies", "languages", "borders", "area"))


def _raw_countries() -> list[dict]:
  """Returns countryinfo's raw entries, one per alpha-3 code (the most complete wins)."""
  from countryinfo import CountryInfo  # pylint: disable=import-outside-toplevel
  by_code: dict[str, dict] = {}
  for raw in sorted(CountryInfo.all().values(), key=lambda r: str(r.get("name"))):
    name = _clean_str(raw.get("name"))
    code = _clean_str((raw.get("ISO") or {}).get("alpha3"))
    population = _positive_number(raw.get("population"))
    if not name or not code or population is None or name in codes.EXCLUDED_COUNTRIES:
      continue
    old = by_code.get(code)
    if old is None or (_completeness(raw), raw["population"]) > (_completeness(old),
                                                                  old["population"]):
      by_code[code] = raw
  return list(by_code.values())


def _border_codes(raw: dict, alpha2_to_3: dict[str, str]) -> set[str]:
  """Returns the alpha-3 codes a raw entry lists as borders (alpha-2 codes converted)."""
  out = set()
  for b in raw.get("borders") or []:
    if isinstance(b, str):
      b = b.strip().upper()
      out.add(alpha2_to_3.get(b, b) if len(b) == 2 else b)
  return out


def _country(raw: dict, neighbours: list[str]) -> Country:
  """Returns the cleaned Country for one raw entry and its mutual neighbours."""
  alpha3 = raw["ISO"]["alpha3"].strip()
  name, renamed_aliases = codes.COUNTRY_RENAMES.get(raw["name"].strip(), (raw["name"].strip(), ()))
  aliases = (name,) + tuple(renamed_aliases) + codes.COUNTRY_ALIASES.get(name, ())
  capital, capital_aliases = _capital(raw)
  currencies = tuple(c for c in (_currency(x) for x in raw.get("currencies") or []
                                 if isinstance(x, str)) if c is not None)
  population = int(raw["population"])
  area = _positive_number(raw.get("area"))
  return Country(code=alpha3, name=name, aliases=tuple(dict.fromkeys(aliases)), capital=capital,
                 capital_aliases=capital_aliases, currencies=currencies,
                 languages=_languages(raw, alpha3), region=_clean_str(raw.get("region")),
                 subregion=_clean_str(raw.get("subregion")),
                 intermediate_region=_clean_str(raw.get("intermediateregion")),
                 neighbours=tuple(neighbours), population=population, area=area,
                 popularity=math.log10(population))


@functools.lru_cache(maxsize=None)
def load_countries() -> tuple[Country, ...]:
  """Returns every clean country, sorted by name (cached for the process lifetime)."""
  raws = _raw_countries()
  alpha2_to_3 = {str(r["ISO"].get("alpha2", "")).strip().upper(): r["ISO"]["alpha3"].strip()
                 for r in raws}
  borders = {r["ISO"]["alpha3"].strip(): _border_codes(r, alpha2_to_3) for r in raws}
  # A border is kept only when both countries list each other: countryinfo has one-sided
  # errors (e.g. Kuwait listing Iran), so we prefer dropping a true border to keeping a
  # false one.
  mutual = {code: sorted(b for b in bs if b != code and code in borders.get(b, ()))
            for code, bs in borders.items()}
  countries = sorted((_country(r, mutual[r["ISO"]["alpha3"].strip()]) for r in raws),
                     key=lambda c: c.name)
  return tuple(countries)


@functools.lru_cache(maxsize=None)
def countries_by_code() -> dict[str, Country]:
  """Returns {alpha-3 code: Country} for ``load_countries()``."""
  return {c.code: c for c in load_countries()}


_THE_SUFFIXES = ("Islands", "Republic", "States", "Kingdom", "Emirates", "Netherlands",
                 "Philippines", "Maldives", "Comoros", "Seychelles", "Lands")
_THE_PREFIXES = ("Republic of", "Democratic Republic", "Federated States", "Holy See",
                 "Central African", "Isle of", "United")


def in_sentence(name: str) -> str:
  """Returns a country name as written mid-sentence: "the Netherlands", "the Gambia"."""
  if name.startswith("The "):
    return "the " + name[4:]
  if name.endswith(_THE_SUFFIXES) or name.startswith(_THE_PREFIXES):
    return "the " + name
  return name


def sentence_start(text: str) -> str:
  """Returns text with its first character upper-cased (for "the ..." at a sentence start)."""
  return text[:1].upper() + text[1:]


def format_int(n: float) -> str:
  """Returns n with thousands separators ("6,536,000"); keeps decimals for non-integers."""
  if float(n).is_integer():
    return f"{int(n):,}"
  return f"{n:,}"


def join_names(names) -> str:
  """Returns "A", "A and B" or "A, B and C"."""
  names = list(names)
  if len(names) <= 1:
    return "".join(names)
  return ", ".join(names[:-1]) + " and " + names[-1]
