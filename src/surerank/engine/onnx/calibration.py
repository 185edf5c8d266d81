"""Calibration text: the sentences every check of a graph runs (export parity, int8 drift, outlier
channels, the int8-fast search, ``precision="auto"``), tokenised for a model and head."""

from __future__ import annotations

import numpy as np

from surerank.engine.checkpoint.files import ModelFiles
from surerank.engine.text.batching import Batch, build_batch
from surerank.engine.text.tokenize import Sequence, TokenizerEngine, pair_sequence, single_sequence

#: the longest calibration sequence, in tokens (or the model's limit when lower)
CALIBRATION_MAX_LENGTH = 256
#: neighbours each calibration text is paired with for a classifier head in the drift checks (32 texts ->
#: 96 pairs); the export check pairs each text with its 7th neighbour
DRIFT_PAIR_OFFSETS = (1, 2, 3)
EXPORT_PAIR_OFFSETS = (7,)

# Calibration text for the int8 graphs (outlier channels, the drift checks, the int8-fast search): varied
# everyday and technical prose, written for this.
CALIBRATION_TEXTS = (
    "How long does it take to boil an egg so that the yolk stays soft?",
    "The mitochondria is the organelle that produces most of the chemical energy in a cell.",
    "Interest rates rose for the third time this year as inflation stayed above the target.",
    "what is the capital of australia",
    "Canberra was chosen as the capital in 1908 as a compromise between Sydney and Melbourne.",
    "To reset the router, hold the button on the back for ten seconds until the light blinks.",
    "The patient was given 500 mg of amoxicillin three times a day for a week.",
    "symptoms of vitamin d deficiency in adults",
    "Photosynthesis converts light, water and carbon dioxide into glucose and oxygen.",
    "The bridge was closed after engineers found cracks in two of its steel supports.",
    "In 1969 Apollo 11 landed on the Moon and Neil Armstrong became the first person to walk on it.",
    "Python's list comprehension builds a new list by applying an expression to each item.",
    "cheap flights from london to new york in december",
    "The recipe calls for two cups of flour, a pinch of salt and a tablespoon of olive oil.",
    "Heavy rain is expected across the north on Friday, with winds of up to 80 km/h on the coast.",
    "A boundary layer forms where the air next to a wing's surface is slowed by friction.",
    "The court ruled that the contract was void because one party had been misled about the price.",
    "how many calories are burned walking 10000 steps",
    "Glaciers in the Alps have lost more than half of their volume since 1900.",
    "The quarterly report shows revenue of 4.2 billion dollars, up 12 percent from a year earlier.",
    "Mix the cement with water slowly; too much water weakens the concrete once it sets.",
    "Shakespeare wrote Hamlet around 1600; it is his longest play.",
    "define osmosis biology",
    "Osmosis is the movement of water across a membrane from a dilute to a concentrated solution.",
    "The train to Edinburgh leaves from platform 4 at 9:15 and arrives shortly after one o'clock.",
    "Regular exercise lowers blood pressure and improves sleep in most adults.",
    "The company recalled 30,000 cars because a faulty sensor could disable the airbags.",
    "which planet has the most moons",
    "Saturn has more than 140 known moons, the largest of which is Titan.",
    "A mortgage is a loan secured against a property, repaid with interest over many years.",
    "The violinist played Bach's partitas from memory to a full concert hall.",
    "Antibiotics do not work against viruses such as the common cold or influenza.",
)


def calibration_sequences(files: ModelFiles, head: str, pair_offsets: tuple[int, ...]
                          ) -> tuple[TokenizerEngine, list[Sequence]]:
    """The calibration texts as model sequences within the model's max length: each text alone (embedding
    heads), or each paired with its neighbours at ``pair_offsets`` (classifier head); with the tokenizer."""
    tok = TokenizerEngine(files.directory / "tokenizer.json")
    limit = min(int(files.max_length), CALIBRATION_MAX_LENGTH)
    encoded = tok.encode(list(CALIBRATION_TEXTS))
    n = len(encoded)
    if head == "classifier":
        cut = max(1, (limit - tok.template.pair_specials) // 2)
        return tok, [pair_sequence(tok.template, encoded[i][:cut], encoded[(i + k) % n][:cut])
                     for k in pair_offsets for i in range(n)]
    cut = max(1, limit - tok.template.single_specials)
    return tok, [single_sequence(tok.template, x[:cut]) for x in encoded]


def batch_feed(batch: Batch) -> dict[str, np.ndarray]:
    """A batch as an ONNX Runtime feed (``position_ids`` only for the families that take them)."""
    feed = {"input_ids": batch.input_ids, "token_type_ids": batch.token_type_ids,
            "attention_mask": batch.attention_mask}
    if batch.position_ids is not None:
        feed["position_ids"] = batch.position_ids
    return feed


def calibration_feed(files: ModelFiles, head: str) -> dict[str, np.ndarray]:
    """One padded batch of calibration text (pairs with the 7th neighbour for a classifier)."""
    tok, seqs = calibration_sequences(files, head, EXPORT_PAIR_OFFSETS)
    return batch_feed(build_batch(seqs, np.arange(len(seqs)), tok.pad_id, tok.template.second_type_id,
                                  files.position_offset))


def drift_sequences(files: ModelFiles, head: str) -> list[dict[str, np.ndarray]]:
    """Calibration sequences one by one (as the engine runs int8: one sequence per batch): the 32 texts
    alone (embeddings) or 96 pairs of them (classifier head)."""
    tok, seqs = calibration_sequences(files, head, DRIFT_PAIR_OFFSETS)
    return [batch_feed(build_batch(seqs, np.array([i]), tok.pad_id, tok.template.second_type_id,
                                   files.position_offset)) for i in range(len(seqs))]
