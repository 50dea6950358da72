"""World-facts questions (the embedded default task): one-hop, two-hop, self-contained.

``world_facts_examples(seed)`` turns the cleaned countryinfo records into examples:

  one-hop        capital, currency, language, region, neighbour, population, area
  two-hop        two_hop_currency / two_hop_language / two_hop_region (via the capital),
                 two_hop_neighbour_capital, two_hop_capital_by_currency,
                 compare_population (needs two facts)
  self-contained self_reading (the answer is in the question), self_arithmetic (sum or
                 difference of numbers given in the question): a policy should learn
                 not to ask the helper for these.

Generation is deterministic: the phrasing of each example depends only on
(seed, qtype, country), so filtering qtypes never changes other examples. Every
example's ``meta`` holds ``facts`` (the supporting sentences from ``world_fact_base``),
and for helper-dependent types a ``descriptor`` noun phrase that names the answer
indirectly ("the capital of Eritrea") plus its ``answer_kind``, used by privacy synthesis.
"""
from __future__ import annotations

import random

from seekjax.tasks import world_facts as wf
from seekjax.tasks.schema import make_example
from seekjax.tasks.world_codes import LANGUAGE_ALIASES
from seekjax.tasks.world_data import (Country, countries_by_code, format_int, in_sentence,
                                      load_countries, sentence_start)

ONE_HOP_QTYPES = ("capital", "currency", "language", "region", "neighbour", "population", "area")
TWO_HOP_QTYPES = ("two_hop_currency", "two_hop_language", "two_hop_region",
                  "two_hop_neighbour_capital", "two_hop_capital_by_currency", "compare_population")
SELF_CONTAINED_QTYPES = ("self_reading", "self_arithmetic")
WORLD_QTYPES = ONE_HOP_QTYPES + TWO_HOP_QTYPES + SELF_CONTAINED_QTYPES

_PHRASES = {
    "capital": ("What is the capital of {c}?", "Which city is the capital of {c}?",
                "Name the capital city of {c}."),
    "currency": ("What currency is used in {c}?", "What is the official currency of {c}?",
                 "Which currency do people pay with in {c}?"),
    "language": ("Name an official language of {c}.", "What is one official language of {c}?"),
    "region": ("In which world region is {c}?", "Which region of the world is {c} part of?"),
    "neighbour": ("Name a country that shares a land border with {c}.",
                  "Which country borders {c}?"),
    "population": ("What is the population of {c}?", "How many people live in {c}?"),
    "area": ("What is the area of {c} in square kilometres?", "How many square kilometres is {c}?"),
    "two_hop_currency": ("What currency is used in the country whose capital is {cap}?",
                         "{cap} is a capital city. What is the currency of its country?"),
    "two_hop_language": ("Name an official language of the country whose capital is {cap}.",
                         "What is one official language of the country with capital {cap}?"),
    "two_hop_region": ("In which world region is the country whose capital is {cap}?",),
    "two_hop_neighbour_capital": ("What is the capital of a country that borders {c}?",
                                  "Name the capital city of one of {c}'s neighbouring countries."),
    "two_hop_capital_by_currency": ("What is the capital of the country that uses the {cur}?",),
    "compare_population": ("Which has more people, {a} or {b}?",
                           "Which country has the larger population: {a} or {b}?"),
}

_DESCRIPTORS = {  # qtype -> (descriptor template, answer kind)
    "capital": ("the capital of {c}", "city"),
    "currency": ("the currency of {c}", "currency"),
    "language": ("an official language of {c}", "language"),
    "region": ("the world region that {c} belongs to", "region"),
    "neighbour": ("a country bordering {c}", "country"),
    "population": ("the population of {c}", "number"),
    "area": ("the area of {c} in square kilometres", "number"),
    "two_hop_currency": ("the currency of the country whose capital is {cap}", "currency"),
    "two_hop_language": ("an official language of the country whose capital is {cap}", "language"),
    "two_hop_region": ("the world region of the country whose capital is {cap}", "region"),
    "two_hop_neighbour_capital": ("the capital of a country bordering {c}", "city"),
    "two_hop_capital_by_currency": ("the capital of the country that uses the {cur}", "city"),
    "compare_population": ("whichever of {a} and {b} has more people", "country"),
}


def _rng(seed: int, qtype: str, key: str) -> random.Random:
  """Returns a Random seeded only by (seed, qtype, key), independent of other examples."""
  return random.Random(f"{seed}/{qtype}/{key}")


def _number_aliases(n: float, unit: str = "") -> list[str]:
  """Returns spellings of a count: "6536000", "6,536,000", "6.5 million", with a unit."""
  base = [format_int(n).replace(",", ""), format_int(n)]
  if n >= 1e9:
    base.append(f"{n / 1e9:.1f} billion")
  elif n >= 1e6:
    base.append(f"{n / 1e6:.1f} million")
  return base + [f"{b} {unit}" for b in base if unit]


def _example(qtype: str, key: str, c: Country, question: str, answers, *, fmt: dict,
             facts: list[str], entities: list[str] | None = None, hops: dict | None = None) -> dict:
  """Returns a world-facts example; popularity is that of the least known country in ``key``.

  hops (two-hop questions that a helper can answer one fact at a time): {"first": the
  question for the bridge entity, "then": the second question with "{x}" for the bridge,
  "bridges": the accepted bridge entities}. The cold start's decomposition demos use it.
  """
  meta = {"facts": facts, "entities": entities or [c.name]}
  if hops:
    meta["hops"] = hops
  if qtype in _DESCRIPTORS:
    descriptor, kind = _DESCRIPTORS[qtype]
    meta.update(descriptor=descriptor.format(**fmt), answer_kind=kind)
  meta["self_contained"] = qtype in SELF_CONTAINED_QTYPES
  popularity = min(countries_by_code()[x].popularity for x in key.split("+"))
  return make_example(question=question, answers=list(dict.fromkeys(answers)), task="world_facts",
                      id=f"world/{qtype}/{key}", qtype=qtype, entity=c.name,
                      popularity=popularity, meta=meta)


def _one_hop(qtype: str, c: Country, seed: int) -> dict | None:
  """Returns the one-hop example of ``qtype`` about ``c``, or None if the field is missing."""
  by_code = countries_by_code()
  table = {
      "capital": (c.capital, lambda: c.capital_aliases, wf.capital_fact),
      "currency": (c.currencies, lambda: [a for x in c.currencies for a in x.aliases],
                   wf.currency_fact),
      "language": (c.languages, lambda: _language_aliases(c), wf.language_fact),
      "region": (c.region, lambda: _region_aliases(c), wf.region_fact),
      "neighbour": (c.neighbours, lambda: [a for n in c.neighbours for a in by_code[n].aliases],
                    wf.neighbour_fact),
      "population": (c.population, lambda: _number_aliases(c.population, "people"),
                     wf.population_fact),
      "area": (c.area, lambda: _number_aliases(c.area, "square kilometres"), wf.area_fact),
  }
  present, answers, fact = table[qtype]
  if not present:
    return None
  phrase = _rng(seed, qtype, c.code).choice(_PHRASES[qtype])
  name = in_sentence(c.name)
  return _example(qtype, c.code, c, sentence_start(phrase.format(c=name)), answers(),
                  fmt={"c": name}, facts=[fact(c)])


def _language_aliases(c: Country) -> list[str]:
  """Returns every accepted name of every official language of ``c``."""
  return [a for lang in c.languages for a in (lang,) + LANGUAGE_ALIASES.get(lang, ())]


def _region_aliases(c: Country) -> list[str]:
  """Returns region, subregion and intermediate region (those present)."""
  return [r for r in (c.region, c.subregion, c.intermediate_region) if r]


def _two_hop_via_capital(qtype: str, c: Country, seed: int, unique_capitals: set) -> dict | None:
  """Returns a currency/language/region question that names the country by its capital."""
  if c.capital not in unique_capitals:
    return None
  inner = {"two_hop_currency": "currency", "two_hop_language": "language",
           "two_hop_region": "region"}[qtype]
  base = _one_hop(inner, c, seed)
  if base is None:
    return None
  phrase = _rng(seed, qtype, c.code).choice(_PHRASES[qtype])
  hops = {"first": f"What is the country whose capital is {c.capital}?",
          "then": "What is " + _DESCRIPTORS[inner][0].format(c="{x}") + "?",
          "bridges": [in_sentence(c.name)]}
  return _example(qtype, c.code, c, phrase.format(cap=c.capital), base["answers"],
                  fmt={"cap": c.capital}, facts=[wf.capital_fact(c)] + base["meta"]["facts"],
                  hops=hops)


def _neighbour_capital(c: Country, seed: int) -> dict | None:
  """Returns "capital of a country bordering X" (any neighbour's capital counts), or None."""
  by_code = countries_by_code()
  neighbours = [by_code[n] for n in c.neighbours if by_code[n].capital]
  if not neighbours:
    return None
  qtype = "two_hop_neighbour_capital"
  phrase = _rng(seed, qtype, c.code).choice(_PHRASES[qtype])
  answers = [a for n in neighbours for a in n.capital_aliases]
  facts = [wf.neighbour_fact(c)] + [wf.capital_fact(n) for n in neighbours]
  name = in_sentence(c.name)
  hops = {"first": f"Which countries share land borders with {name}?",
          "then": "What is the capital of {x}?", "bridges": [in_sentence(n.name) for n in neighbours]}
  return _example(qtype, c.code, c, sentence_start(phrase.format(c=name)), answers,
                  fmt={"c": name}, facts=facts, hops=hops)


def _capital_by_currency(c: Country, seed: int, currency_users: dict) -> dict | None:
  """Returns "capital of the country using CURRENCY" for a currency one country uses, or None."""
  unique = [x for x in c.currencies if currency_users[x.code] == 1]
  if not unique or not c.capital:
    return None
  qtype = "two_hop_capital_by_currency"
  cur = unique[0].name
  phrase = _rng(seed, qtype, c.code).choice(_PHRASES[qtype])
  return _example(qtype, c.code, c, phrase.format(cur=cur), c.capital_aliases, fmt={"cur": cur},
                  facts=[wf.currency_fact(c), wf.capital_fact(c)])


def _partner(c: Country, countries, rng: random.Random, min_ratio: float = 1.25) -> Country:
  """Returns a random other country whose population differs from c's by >= min_ratio."""
  options = [o for o in countries if o.code != c.code
             and max(o.population, c.population) >= min_ratio * min(o.population, c.population)]
  return rng.choice(options)


def _compare_population(c: Country, seed: int, countries) -> dict:
  """Returns "which of A and B has more people" with a clearly different partner B."""
  qtype = "compare_population"
  rng = _rng(seed, qtype, c.code)
  other = _partner(c, countries, rng)
  a, b = (c, other) if rng.random() < 0.5 else (other, c)
  bigger = a if a.population > b.population else b
  fmt = {"a": in_sentence(a.name), "b": in_sentence(b.name)}
  question = sentence_start(rng.choice(_PHRASES[qtype]).format(**fmt))
  return _example(qtype, f"{c.code}+{other.code}", c, question,
                  bigger.aliases, fmt=fmt, facts=[wf.population_fact(a), wf.population_fact(b)],
                  entities=[c.name, other.name])


def _self_reading(c: Country, seed: int, countries) -> dict | None:
  """Returns a question whose answer is stated in the question itself (plus a distractor)."""
  qtype = "self_reading"
  rng = _rng(seed, qtype, c.code)
  has = {"capital": lambda x: x.capital, "currency": lambda x: x.currencies,
         "language": lambda x: x.languages}
  fields = [f for f in ("capital", "currency", "language") if has[f](c)]
  if not fields:
    return None
  field = rng.choice(fields)
  other = rng.choice([o for o in countries if o.code != c.code and has[field](o)])
  target = _one_hop(field, c, seed)
  facts = [target["meta"]["facts"][0], _one_hop(field, other, seed)["meta"]["facts"][0]]
  rng.shuffle(facts)
  asked = target["question"]
  question = f"{' '.join(facts)} Using only these sentences, {asked[0].lower()}{asked[1:]}"
  return _example(qtype, f"{c.code}+{other.code}", c, question, target["answers"], fmt={},
                  facts=facts, entities=[c.name, other.name])


def _self_arithmetic(c: Country, seed: int, countries) -> dict:
  """Returns a sum/difference question over two numbers stated in the question."""
  qtype = "self_arithmetic"
  rng = _rng(seed, qtype, c.code)
  other = _partner(c, countries, rng)
  big, small = (c, other) if c.population > other.population else (other, c)
  big_name, small_name = in_sentence(big.name), in_sentence(small.name)
  stated = sentence_start(f"{big_name} has {format_int(big.population)} inhabitants and "
                          f"{small_name} has {format_int(small.population)}.")
  if rng.random() < 0.5:
    question = f"{stated} How many inhabitants do the two countries have together?"
    value = big.population + small.population
  else:
    question = f"{stated} How many more inhabitants does {big_name} have than {small_name}?"
    value = big.population - small.population
  return _example(qtype, f"{c.code}+{other.code}", c, question, _number_aliases(value)[:2],
                  fmt={}, facts=[], entities=[c.name, other.name])


def world_facts_examples(seed: int = 0, qtypes=None) -> list[dict]:
  """Returns world-facts examples for every country and requested qtype.

  Args:
    seed: picks phrasings and partner countries; same seed -> identical examples.
    qtypes: iterable of names from ``WORLD_QTYPES``; None means all.

  Returns:
    A list of example dicts ordered by qtype (in ``WORLD_QTYPES`` order), then by
    country name. Countries lacking a field get no question of that type.
  """
  qtypes = WORLD_QTYPES if qtypes is None else tuple(qtypes)
  unknown = set(qtypes) - set(WORLD_QTYPES)
  if unknown:
    raise ValueError(f"unknown world qtypes {sorted(unknown)}; expected some of {WORLD_QTYPES}")
  countries = load_countries()
  capital_counts: dict[str, int] = {}
  currency_users: dict[str, int] = {}
  for c in countries:
    if c.capital:
      capital_counts[c.capital] = capital_counts.get(c.capital, 0) + 1
    for x in c.currencies:
      currency_users[x.code] = currency_users.get(x.code, 0) + 1
  unique_capitals = {k for k, v in capital_counts.items() if v == 1}
  makers = {q: (lambda c, q=q: _one_hop(q, c, seed)) for q in ONE_HOP_QTYPES}
  for q in ("two_hop_currency", "two_hop_language", "two_hop_region"):
    makers[q] = lambda c, q=q: _two_hop_via_capital(q, c, seed, unique_capitals)
  makers["two_hop_neighbour_capital"] = lambda c: _neighbour_capital(c, seed)
  makers["two_hop_capital_by_currency"] = lambda c: _capital_by_currency(c, seed, currency_users)
  makers["compare_population"] = lambda c: _compare_population(c, seed, countries)
  makers["self_reading"] = lambda c: _self_reading(c, seed, countries)
  makers["self_arithmetic"] = lambda c: _self_arithmetic(c, seed, countries)
  examples = []
  for qtype in WORLD_QTYPES:
    if qtype in qtypes:
      examples.extend(e for e in (makers[qtype](c) for c in countries) if e is not None)
  return examples
