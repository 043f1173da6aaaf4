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
    "book_flight": ["book a flight to {city} {day}",
                    "i need a plane ticket to {city}",
                    "find me flights from {city} to {city} {day}",
                    "can you get me on a flight {day}"],
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
    "alarm": ["set an alarm for 7 am {day}",
              "wake me up at six {day}",
              "cancel my alarm {day}",
              "change my alarm to 8 am"],
    "reminder": ["remind me to call {person} {day}",
                 "set a reminder to buy {food}",
                 "remind me about the meeting {day}",
                 "don't let me forget to pay {person}"],
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
    "restaurant": ["find a {food} restaurant in {city}",
                   "book a table for two {day}",
                   "recommend a place for {food} near me",
                   "reserve a table in {city} {day}"],
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

_OOS = ["what is the meaning of life", "how tall is the tallest tree",
        "who painted the ceiling in {city}", "can dogs eat {food}",
        "why is the sky blue {day}", "how many moons does jupiter have",
        "tell me about the history of {city}", "is {person} a good singer",
        "what is the best programming language",
        "how do airplanes stay in the air"]


def _fill(template: str, rng: np.random.Generator) -> str:
  out = template
  while "{" in out:
    start = out.index("{")
    end = out.index("}", start)
    slot = out[start + 1:end]
    options = _SLOTS[slot]
    out = out[:start] + options[rng.integers(len(options))] + out[end + 1:]
  return out


def synthetic_intents(num_per_class: int = 60, *, include_oos: bool = True,
                      seed: int = 0) -> TextClassificationData:
  """A deterministic synthetic intent set: 20 intents (+ `oos`).

  Per class, `num_per_class` train rows and a quarter of that each for val
  and test. Labels are sorted intent names, `oos` last.
  """
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
