"""Built-in token-sequence datasets, generated deterministically: no download and no private data.

``topics`` (:data:`TOPICS`): synthetic topic classification, 4096 sequences of 32 token ids in
``[0, 64)``, 4 classes. Ids 0–31 are "function words" shared by all classes; ids
``32 + 8c … 39 + 8c`` are the words of topic ``c``. Each position of a sequence of class ``c`` is,
independently, a word of topic ``c`` with probability 0.1, a word of a uniformly drawn topic
(possibly ``c``) with probability 0.1, and a function word otherwise; words are uniform within
their group. A sequence thus holds on average 4 words of its own topic and 0.8 of each other
one, so the class is recoverable from the counts with high, not perfect, accuracy (the Bayes
error is a few percent). It is a bag-of-words task, made to train the built-in ``transformer``
end to end on a CPU in seconds, not to test what attention adds.

The generator's seed is a constant of this module, so the dataset is the same everywhere and
public by construction: differential privacy has nothing to protect in it, which makes it a
benchmark and a smoke test, not a use case. Ids are returned as float32 (exact below 2^24), the
dtype the workers hand every model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np


@dataclass(frozen=True)
class TopicTask:
    """The shape of a synthetic topic-classification dataset (see the module doc)."""

    examples: int
    length: int
    topics: int
    words_per_topic: int
    function_words: int
    own_topic: float
    any_topic: float
    seed: int

    @property
    def vocabulary(self) -> int:
        """Token ids lie in ``[0, vocabulary)``."""
        return self.function_words + self.topics * self.words_per_topic

    def generate(self) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)``: token ids, float32 ``(examples, length)``, and labels, int64 ``(examples,)``; deterministic."""
        rng = np.random.default_rng(self.seed)
        y = rng.integers(0, self.topics, self.examples)
        kind = rng.random((self.examples, self.length))
        topic = np.where(kind < self.own_topic, y[:, None], rng.integers(0, self.topics, kind.shape))
        topic_word = (
            self.function_words + topic * self.words_per_topic + rng.integers(0, self.words_per_topic, kind.shape)
        )
        function_word = rng.integers(0, self.function_words, kind.shape)
        x = np.where(kind < self.own_topic + self.any_topic, topic_word, function_word)
        return x.astype(np.float32), y.astype(np.int64)


TOPICS: Final[TopicTask] = TopicTask(
    examples=4096, length=32, topics=4, words_per_topic=8, function_words=32, own_topic=0.1, any_topic=0.1, seed=14
)
TOKEN_DATASETS: Final[dict[str, TopicTask]] = {"topics": TOPICS}


def read_token_dataset(name: str) -> tuple[np.ndarray, np.ndarray, int]:
    """``(x, y, num_classes)`` of the built-in token dataset ``name`` (a key of :data:`TOKEN_DATASETS`)."""
    task = TOKEN_DATASETS[name]
    x, y = task.generate()
    return x, y, task.topics
