"""The world-facts knowledge base: plain-English fact sentences about every country.

These sentences are what a KnowledgeHelper retrieves from (BM25 over facts). Every
one-hop and two-hop world question is answerable from them, and each question's
``meta["facts"]`` names the exact sentences that support it.
"""
from __future__ import annotations

from seekjax.tasks.world_data import (Country, countries_by_code, format_int, in_sentence,
                                      join_names, load_countries, sentence_start)


def capital_fact(c: Country) -> str:
  """Returns the capital sentence, e.g. "The capital of X is Y."."""
  return f"The capital of {in_sentence(c.name)} is {c.capital}."


def currency_fact(c: Country) -> str:
  """Returns the currency sentence, e.g. "The currency of X is the NAME (CODE)."."""
  named = [f"the {x.name} ({x.code})" for x in c.currencies]
  if len(named) == 1:
    return f"The currency of {in_sentence(c.name)} is {named[0]}."
  return f"The currencies of {in_sentence(c.name)} are {join_names(named)}."


def language_fact(c: Country) -> str:
  """Returns the official-language sentence (plural when there are several)."""
  if len(c.languages) == 1:
    return f"The official language of {in_sentence(c.name)} is {c.languages[0]}."
  return f"The official languages of {in_sentence(c.name)} are {join_names(c.languages)}."


def region_fact(c: Country) -> str:
  """Returns "X is in the world region R (subregion, intermediate region)." for ``c``."""
  parts = [p for p in (c.subregion, c.intermediate_region) if p and p != c.region]
  detail = f" ({', '.join(parts)})" if parts else ""
  return sentence_start(f"{in_sentence(c.name)} is in the world region {c.region}{detail}.")


def neighbour_fact(c: Country) -> str:
  """Returns the border sentence, e.g. "X shares land borders with A and B."."""
  names = [in_sentence(countries_by_code()[code].name) for code in c.neighbours]
  return sentence_start(f"{in_sentence(c.name)} shares land borders with {join_names(names)}.")


def population_fact(c: Country) -> str:
  """Returns the population sentence (number with thousands separators)."""
  return f"The population of {in_sentence(c.name)} is {format_int(c.population)} people."


def area_fact(c: Country) -> str:
  """Returns the area sentence, in square kilometres."""
  return f"The area of {in_sentence(c.name)} is {format_int(c.area)} square kilometres."


COUNT_FACT_PREFIXES = ("The population of ", "The area of ")


def is_count_fact(fact: str) -> bool:
  """True for the facts whose value is a count (population, area), not a name."""
  return fact.startswith(COUNT_FACT_PREFIXES)


def country_facts(c: Country) -> list[str]:
  """Returns every fact sentence about one country (only fields countryinfo has cleanly)."""
  facts = []
  if c.capital:
    facts.append(capital_fact(c))
  if c.currencies:
    facts.append(currency_fact(c))
  if c.languages:
    facts.append(language_fact(c))
  if c.region:
    facts.append(region_fact(c))
  if c.neighbours:
    facts.append(neighbour_fact(c))
  facts.append(population_fact(c))
  if c.area:
    facts.append(area_fact(c))
  return facts


def world_fact_base() -> tuple[list[str], list[str]]:
  """Returns (facts, entities) for a KnowledgeHelper.

  facts: one plain-English sentence per (country, field), e.g.
    "The capital of Eritrea is Asmara.", in country-name order.
  entities: the sorted, de-duplicated names the facts are about: every country name
    and every capital city.
  """
  facts, entities = [], set()
  for c in load_countries():
    facts.extend(country_facts(c))
    entities.add(c.name)
    if c.capital:
      entities.add(c.capital)
  return facts, sorted(entities)
