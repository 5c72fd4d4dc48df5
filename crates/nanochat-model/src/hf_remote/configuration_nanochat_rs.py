"""transformers configuration for nanochat models with the current upstream architecture.

Field names follow upstream nanochat's `GPTConfig` (`nanochat/gpt.py`, HEAD 92d63d4):
`sequence_len`, `vocab_size`, `n_layer`, `n_head`, `n_kv_head`, `n_embd`, `window_pattern`.
The remaining fields are the architecture switches and constants that upstream hard-codes
(named as in nanochat-rs' `ModelConfig`), so that the same code also describes older variants:

- `rope_base` (100000 at HEAD, 10000 in the original release)
- `value_embeds`, `smear`, `backout`, `layer_lambdas`: feature switches (all on at HEAD). When a
  feature is off, its parameters do not exist.
- `qk_scale`: q and k are multiplied by it after QK-norm (1.2 at HEAD, 1.0 originally)
- `logit_softcap`: `c * tanh(logits / c)`, 0 disables it (15 at HEAD)
- `vocab_pad_multiple`: wte / value_embeds / lm_head rows are padded up to a multiple of this
  (upstream `GPT(config, pad_vocab_size_to=64)`); `padded_vocab_size` may be given explicitly
  and must then equal the rounded-up value. Logits are cropped to `vocab_size` (the tokenizer's).
- `ve_gate_channels` (12), `smear_gate_channels` (24): input channels of the two gates.

`vocab_size` is the tokenizer vocabulary, the width of the returned logits. The usual
transformers names (`hidden_size`, `num_hidden_layers`, `num_attention_heads`,
`num_key_value_heads`, `max_position_embeddings`) are aliases of the upstream fields.
"""

from transformers import PretrainedConfig


class NanoChatRsConfig(PretrainedConfig):
    model_type = "nanochat_rs"
    keys_to_ignore_at_inference = ["cache", "past_key_values"]
    attribute_map = {
        "hidden_size": "n_embd",
        "num_hidden_layers": "n_layer",
        "num_attention_heads": "n_head",
        "num_key_value_heads": "n_kv_head",
        "max_position_embeddings": "sequence_len",
    }

    def __init__(
        self,
        sequence_len=2048,
        vocab_size=32768,
        n_layer=12,
        n_head=6,
        n_kv_head=6,
        n_embd=768,
        window_pattern="SSSL",
        rope_base=100000.0,
        value_embeds=True,
        smear=True,
        backout=True,
        layer_lambdas=True,
        qk_scale=1.2,
        logit_softcap=15.0,
        vocab_pad_multiple=64,
        padded_vocab_size=None,
        ve_gate_channels=12,
        smear_gate_channels=24,
        **kwargs,
    ):
        self.sequence_len = int(sequence_len)
        self.vocab_size = int(vocab_size)
        self.n_layer = int(n_layer)
        self.n_head = int(n_head)
        self.n_kv_head = int(n_kv_head)
        self.n_embd = int(n_embd)
        self.window_pattern = str(window_pattern)
        self.rope_base = float(rope_base)
        self.value_embeds = bool(value_embeds)
        self.smear = bool(smear)
        self.backout = bool(backout)
        self.layer_lambdas = bool(layer_lambdas)
        self.qk_scale = float(qk_scale)
        self.logit_softcap = float(logit_softcap) if logit_softcap is not None else 0.0
        self.vocab_pad_multiple = max(int(vocab_pad_multiple), 1)
        m = self.vocab_pad_multiple
        rounded = (self.vocab_size + m - 1) // m * m
        if padded_vocab_size is not None and int(padded_vocab_size) != rounded:
            raise ValueError(
                f"padded_vocab_size {padded_vocab_size} != vocab_size {self.vocab_size} rounded up to "
                f"a multiple of vocab_pad_multiple {m} ({rounded})"
            )
        self.padded_vocab_size = rounded
        self.ve_gate_channels = int(ve_gate_channels)
        self.smear_gate_channels = int(smear_gate_channels)
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd {self.n_embd} is not a multiple of n_head {self.n_head}")
        if self.n_kv_head > self.n_head or self.n_head % self.n_kv_head != 0:
            raise ValueError(f"n_head {self.n_head} must be a multiple of n_kv_head {self.n_kv_head}")
        if (self.n_embd // self.n_head) % 2 != 0:
            raise ValueError("the head dimension must be even (rotary embeddings)")
        pattern = self.window_pattern.upper()
        if not pattern or any(c not in "SL" for c in pattern):
            raise ValueError(f"invalid window_pattern {self.window_pattern!r}: use only S and L")
        # Untied: lm_head and wte are separate matrices.
        kwargs["tie_word_embeddings"] = False
        super().__init__(**kwargs)

    @property
    def head_dim(self):
        return self.n_embd // self.n_head

    def window_sizes(self):
        """Per-layer (left, right) windows exactly as upstream `GPT._compute_window_sizes`:
        the pattern tiled over layers, L = sequence_len, S = ceil(sequence_len/4) rounded up to
        a multiple of 128, the last layer always L. A token attends to itself and `left`
        previous tokens."""
        pattern = self.window_pattern.upper()
        long_window = self.sequence_len
        short_window = -(-long_window // 4 // 128) * 128
        sizes = [
            (long_window if pattern[i % len(pattern)] == "L" else short_window, 0)
            for i in range(self.n_layer)
        ]
        sizes[-1] = (long_window, 0)
        return sizes


__all__ = ["NanoChatRsConfig"]
