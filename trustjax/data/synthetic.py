"""An embedded synthetic intent data set, generated from templates.

Used only when the configured real data set cannot be found or fetched, so
that the demo runs offline with no files; loaders that fall back to it say so
loudly. Deterministic for a given seed. Each intent has several templates and
slot fillers, and intents share vocabulary, so it is learnable but not from a
single token.
"""

from __future__ import annotations

import numpy as np

from trustjax.data.types import Split
from trustjax.data.types import TextClassificationData

_SLOTS = {
    "city": ["paris", "london", "tokyo", "new york", "berlin", "rome",
             "madrid", "chicago", "boston", "seoul", "lima", "cairo"],
    "day": ["today", "tomorrow", "on monday", "on friday", "this weekend",
            "next week", "tonight"],
    "food": ["pizza", "sushi", "pasta", "tacos", "a burger", "curry",
             "salad", "noodles"],
    "song": ["some jazz", "my workout playlist", "the new album",
             "classical music", "a rock song", "something relaxing"],
    "amount": ["20 dollars", "50 euros", "100 dollars", "five pounds",
               "300 yen"],
    "person": ["my mom", "john", "my boss", "sarah", "the landlord",
               "my brother"],
    "lang": ["spanish", "french", "german", "italian", "japanese"],
    "thing": ["the lights", "the heater", "the tv", "the fan", "the oven"],
}

_INTENTS = {
    "weather": ["what is the weather in {city} {day}",
                "will it rain in {city} {day}",
                "do i need an umbrella {day}",
                "how hot will it be in {city}"],
    "order_food": ["order {food} for delivery",
                   "i want {food} {day}",
                   "get me some {food} from a place nearby",
                   "can you order {food} for {person}"],
    "play_music": ["play {song}", "put on {song} please",
                   "i want to listen to {song}",
                   "start playing {song} in the kitchen"],
    "transfer": ["send {amount} to {person}",
                 "transfer {amount} to {person} {day}",
                 "move {amount} into my savings",
                 "pay {person} {amount}"],
    "balance": ["what is my account balance",
                "how much money do i have",
                "check my balance {day}",
                "do i have {amount} in checking"],
    "translate": ["how do you say hello in {lang}",
                  "translate thank you into {lang}",
                  "what is {food} in {lang}",
                  "say good morning in {lang}"],
    "smart_home": ["turn off {thing}", "switch on {thing}",
                   "dim {thing} in the bedroom",
                   "is {thing} still on"],
    "timer": ["set a timer for ten minutes",
              "start a 5 minute timer", "how much time is left on my timer",
              "stop the timer"],
    "calendar": ["what is on my calendar {day}",
                 "schedule lunch with {person} {day}",
                 "am i free {day}",
                 "add a meeting with {person} {day}"],
    "directions": ["how do i get to {city}",
                   "give me directions to the nearest station",
                   "how long is the drive to {city}",
                   "what is the fastest route to {city} {day}"],
    "exchange_rate": ["how many {lang} coins is {amount}",
                      "what is the exchange rate for {amount}",
                      "convert {amount} to yen",
                      "exchange rate in {city} {day}"],
    "call": ["call {person}", "phone {person} {day}",
             "ring {person} on speaker", "dial {person} please"],
    "text_message": ["text {person} that i am late",
                     "send a message to {person}",
                     "tell {person} i will be there {day}",
                     "message {person} about {food}"],
    "shopping_list": ["add {food} to my shopping list",
                      "what is on my shopping list",
                      "remove {food} from the list",
                      "put milk on the shopping list"],
    "news": ["what is the news {day}", "read me the headlines",
             "any news from {city}", "give me the latest sports news"],
    "joke": ["tell me a joke", "make me laugh",
             "do you know any jokes about {food}",
             "say something funny"],
}

# A factorised grid of intents (action x object): every action word occurs
# with every object and vice versa, so a class needs both, never one token.
_ACTIONS = {
    "create": ["set up {obj}", "make {obj}", "i need {obj}", "create {obj}",
               "add {obj}"],
    "cancel": ["cancel {obj}", "get rid of {obj}", "delete {obj}",
               "i no longer need {obj}", "call off {obj}"],
    "check": ["what is the status of {obj}", "check on {obj}",
              "is {obj} still on", "do i have {obj}", "show me {obj}"],
}
_OBJECTS = {
    "alarm": ["an alarm for 7 am {day}", "my alarm {day}",
              "a wake up alarm"],
    "reminder": ["a reminder to call {person}", "my reminder about {food}",
                 "a reminder {day}"],
    "reservation": ["a table at the {food} place {day}",
                    "my dinner reservation in {city}",
                    "a restaurant booking for {person}"],
    "flight": ["a flight to {city} {day}", "my plane ticket to {city}",
               "the flight with {person}"],
}
for _a, _verbs in _ACTIONS.items():
  for _o, _objs in _OBJECTS.items():
    _INTENTS[f"{_a}_{_o}"] = [v.replace("{obj}", o) for v in _verbs
                              for o in _objs]

_OOS = ["what is the meaning of life", "how tall is the tallest tree",
        "who painted the ceiling in {city}", "can dogs eat {food}",
        "why is the sky blue {day}", "how many moons does jupiter have",
        "tell me about the history of {city}", "is {person} a good singer",
        "what is the best programming language",
        "how do airplanes stay in the air"]


# Politeness wrappers shared by every class (including oos), so that no
# class owns a whole sentence shape.
_PREFIX = ["", "", "", "please ", "hey, ", "can you ", "i was wondering, ",
           "quick question: ", "assistant, "]
_SUFFIX = ["", "", "", " please", " thanks", " right now", " for me",
           " if you can"]


def _fill(template: str, rng: np.random.Generator) -> str:
  out = (_PREFIX[rng.integers(len(_PREFIX))] + template
         + _SUFFIX[rng.integers(len(_SUFFIX))])
  while "{" in out:
    start = out.index("{")
    end = out.index("}", start)
    slot = out[start + 1:end]
    options = _SLOTS[slot]
    out = out[:start] + options[rng.integers(len(options))] + out[end + 1:]
  return out


def synthetic_intents(num_per_class: int = 60, *, include_oos: bool = True,
                      seed: int = 0) -> TextClassificationData:
  """A deterministic synthetic intent set: 28 intents (+ `oos`).

  16 intents have 4 templates each; 12 more form an action x object grid
  (create/cancel/check x alarm/reminder/reservation/flight) where the class
  needs both the action and the object words. Slot fillers (cities, days,
  foods, people, ...) and politeness prefixes/suffixes are shared across
  intents, so no single token identifies a class, yet a bag-of-words model
  learns it well. Exact duplicate sentences across splits are possible
  (small template space), as in real intent data.

  Args:
    num_per_class: train rows per class; val and test get
      max(1, num_per_class // 4) rows per class each.
    include_oos: add the out-of-scope class `oos` (last label).
    seed: the same seed gives the same data set.

  Returns:
    TextClassificationData with labels = sorted intent names (+ `oos` last),
    rows grouped by class, and `source` saying it is synthetic.
  """
  if num_per_class < 1:
    raise ValueError(f"num_per_class={num_per_class} must be >= 1")
  rng = np.random.default_rng(seed)
  names = sorted(_INTENTS)
  templates = [_INTENTS[n] for n in names]
  if include_oos:
    names = names + ["oos"]
    templates = templates + [_OOS]
  sizes = {"train": num_per_class, "val": max(1, num_per_class // 4),
           "test": max(1, num_per_class // 4)}
  splits = {}
  for split, n in sizes.items():
    texts, labels = [], []
    for label, temps in enumerate(templates):
      for _ in range(n):
        texts.append(_fill(temps[rng.integers(len(temps))], rng))
        labels.append(label)
    splits[split] = Split(texts, np.array(labels))
  return TextClassificationData(
      train=splits["train"], val=splits["val"], test=splits["test"],
      label_names=names, oos_label=len(names) - 1 if include_oos else None,
      source=f"SYNTHETIC fallback intents (embedded, seed {seed}); not a "
             "real data set")
