"""transformers remote code for nanochat models with the current upstream architecture.

A line-by-line port of the forward pass of upstream nanochat's `nanochat/gpt.py` (HEAD 92d63d4)
and of the SDPA fallback in `nanochat/flash_attention.py`: rotary embeddings (base 100000,
half-split, rotation by -theta), parameter-free RMSNorm (`F.rms_norm`, default eps), QK-norm
then q, k *= 1.2, GQA, ReLU^2 MLP, value embeddings with a 3*sigmoid gate on alternating layers
(the last one always), smear, per-layer resid/x0 lambdas, backout, logit softcap, padded vocab
cropped in the output, and per-layer sliding windows from `window_pattern`.

Parameter names are upstream's state_dict names (`transformer.wte.weight`,
`transformer.h.{i}.attn.c_q.weight`, `value_embeds.{i}.weight`, `resid_lambdas`, ...), with
upstream's shapes (vocab rows padded), so upstream weights load unchanged.

Differences from upstream, none of which changes the logits of an unpadded sequence:
- the KV cache is transformers' `Cache` (`DynamicCache`); decoding with it gives the same logits
  as a full forward, as upstream's engine does. A multi-token chunk after a non-empty cache
  smears its first token with the previous one (upstream's engine does not, a quirk of its
  prefill path; the full forward does).
- a 2-D `attention_mask` with zeros (left padding) hides the padded keys and stops smear from
  mixing a padded token into the next one. Upstream has no padding; rotary positions stay the
  slot index, which does not matter because rotary attention only sees relative positions.
- `labels` follow transformers' convention (shifted inside, -100 ignored); upstream's
  `targets` are already shifted and use -1.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_nanochat_rs import NanoChatRsConfig

# transformers 5 names the cache `cache`; 4.x named it `past_key_values`.
_CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
_PREV_EMBEDDING_ATTR = "_nanochat_rs_prev_embedding"


def norm(x):
    # Parameter-free RMSNorm; eps=None is torch's default, finfo(x.dtype).eps, as upstream.
    return F.rms_norm(x, (x.size(-1),))


def has_ve(layer_idx, n_layer):
    """Upstream `has_ve`: alternating layers, the last layer always included."""
    return layer_idx % 2 == (n_layer - 1) % 2


class Linear(nn.Linear):
    """Upstream's Linear: the weight is cast to the activation dtype in forward."""

    def forward(self, x):
        return F.linear(x, self.weight.to(dtype=x.dtype))


def apply_rotary_emb(x, cos, sin):
    # Upstream: rotates by -theta (the transpose of the textbook convention).
    assert x.ndim == 4
    d = x.shape[3] // 2
    x1, x2 = x[..., :d], x[..., d:]
    y1 = x1 * cos + x2 * sin
    y2 = x1 * (-sin) + x2 * cos
    return torch.cat([y1, y2], 3)


def sdpa_attention(q, k, v, window_size, enable_gqa, key_valid=None):
    """Upstream `flash_attention._sdpa_attention`; q, k, v are (B, H, T, D), the Tq queries
    being the last Tq of the Tk keys. `key_valid` (B, Tk) bool, optional: False marks padding
    keys, which no query attends to (a query always sees itself so that no row is empty)."""
    Tq = q.size(2)
    Tk = k.size(2)
    window = window_size[0]
    if key_valid is None:
        if (window < 0 or window >= Tq) and Tq == Tk:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=enable_gqa)
        if Tq == 1:
            if window >= 0 and window < Tk:
                start = max(0, Tk - (window + 1))
                k = k[:, :, start:, :]
                v = v[:, :, start:, :]
            return F.scaled_dot_product_attention(q, k, v, is_causal=False, enable_gqa=enable_gqa)
    device = q.device
    row_idx = (Tk - Tq) + torch.arange(Tq, device=device).unsqueeze(1)
    col_idx = torch.arange(Tk, device=device).unsqueeze(0)
    mask = col_idx <= row_idx
    if window >= 0 and window < Tk:
        mask = mask & ((row_idx - col_idx) <= window)
    if key_valid is not None:
        mask = mask & (key_valid[:, None, None, :] | (col_idx == row_idx)[None, None])
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=enable_gqa)


class CausalSelfAttention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head = config.n_head
        self.n_kv_head = config.n_kv_head
        self.n_embd = config.n_embd
        self.head_dim = self.n_embd // self.n_head
        self.qk_scale = config.qk_scale
        self.c_q = Linear(self.n_embd, self.n_head * self.head_dim, bias=False)
        self.c_k = Linear(self.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_v = Linear(self.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_proj = Linear(self.n_embd, self.n_embd, bias=False)
        self.ve_gate_channels = config.ve_gate_channels
        self.ve_gate = (
            Linear(self.ve_gate_channels, self.n_kv_head, bias=False)
            if config.value_embeds and has_ve(layer_idx, config.n_layer)
            else None
        )

    def forward(self, x, ve, cos_sin, window_size, cache, key_valid):
        B, T, C = x.size()
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)
        if ve is not None:
            ve = ve.view(B, T, self.n_kv_head, self.head_dim)
            gate = 3 * torch.sigmoid(self.ve_gate(x[..., : self.ve_gate_channels]))
            v = v + gate.unsqueeze(-1) * ve
        cos, sin = cos_sin
        q, k = apply_rotary_emb(q, cos, sin), apply_rotary_emb(k, cos, sin)
        q, k = norm(q), norm(k)
        if self.qk_scale != 1.0:
            q = q * self.qk_scale
            k = k * self.qk_scale
        # (B, T, H, D) -> (B, H, T, D), the layout of SDPA and of transformers' caches.
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        enable_gqa = q.size(1) != k.size(1)
        y = sdpa_attention(q, k, v, window_size, enable_gqa, key_valid)
        y = y.transpose(1, 2).contiguous().view(B, T, -1)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = Linear(4 * config.n_embd, config.n_embd, bias=False)

    def forward(self, x):
        return self.c_proj(F.relu(self.c_fc(x)).square())


class Block(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.attn = CausalSelfAttention(config, layer_idx)
        self.mlp = MLP(config)

    def forward(self, x, ve, cos_sin, window_size, cache, key_valid):
        x = x + self.attn(norm(x), ve, cos_sin, window_size, cache, key_valid)
        x = x + self.mlp(norm(x))
        return x


class NanoChatRsPreTrainedModel(PreTrainedModel):
    config_class = NanoChatRsConfig
    base_model_prefix = "model"
    _no_split_modules = ["Block"]
    supports_gradient_checkpointing = False
    _supports_cache_class = True
    _supports_static_cache = False
    _can_compile_fullgraph = False

    def _init_weights(self, module):
        """Upstream `init_weights()` for weights that are not loaded (e.g. `from_config`).
        Each Linear / Embedding carries its upstream rule in `_nanochat_init`."""
        rule = getattr(module, "_nanochat_init", None)
        if rule is not None:
            kind, a, b = rule
            if kind == "normal":
                nn.init.normal_(module.weight, mean=a, std=b)
            elif kind == "uniform":
                nn.init.uniform_(module.weight, a, b)
            else:
                nn.init.zeros_(module.weight)
        if isinstance(module, NanoChatRsForCausalLM):
            n = module.config.n_layer
            with torch.no_grad():
                if module.resid_lambdas is not None:
                    self._fill(module.resid_lambdas, [1.15 - 0.10 * i / max(n - 1, 1) for i in range(n)])
                    self._fill(module.x0_lambdas, [0.20 - 0.15 * i / max(n - 1, 1) for i in range(n)])
                if module.smear_lambda is not None:
                    nn.init.zeros_(module.smear_lambda)
                if module.backout_lambda is not None:
                    nn.init.constant_(module.backout_lambda, 0.2)

    @staticmethod
    def _fill(param, values):
        if not getattr(param, "_is_hf_initialized", False) and param.device.type != "meta":
            param.copy_(torch.tensor(values, dtype=param.dtype, device=param.device))


class NanoChatRsForCausalLM(NanoChatRsPreTrainedModel, GenerationMixin):
    def __init__(self, config):
        super().__init__(config)
        self.window_sizes = config.window_sizes()
        padded = config.padded_vocab_size
        head_dim = config.n_embd // config.n_head
        kv_dim = config.n_kv_head * head_dim
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(padded, config.n_embd),
                "h": nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
            }
        )
        self.lm_head = Linear(config.n_embd, padded, bias=False)
        if config.layer_lambdas:
            self.resid_lambdas = nn.Parameter(torch.ones(config.n_layer))
            self.x0_lambdas = nn.Parameter(torch.zeros(config.n_layer))
        else:
            self.resid_lambdas = None
            self.x0_lambdas = None
        if config.smear:
            self.smear_gate = Linear(config.smear_gate_channels, 1, bias=False)
            self.smear_lambda = nn.Parameter(torch.zeros(1))
        else:
            self.smear_gate = None
            self.smear_lambda = None
        self.backout_lambda = nn.Parameter(0.2 * torch.ones(1)) if config.backout else None
        self.value_embeds = nn.ModuleDict(
            {
                str(i): nn.Embedding(padded, kv_dim)
                for i in range(config.n_layer)
                if config.value_embeds and has_ve(i, config.n_layer)
            }
        )
        # Upstream's init rules (used by _init_weights for weights that are not loaded).
        s = 3**0.5 * config.n_embd**-0.5
        self.transformer.wte._nanochat_init = ("normal", 0.0, 0.8)
        self.lm_head._nanochat_init = ("normal", 0.0, 0.001)
        for block in self.transformer.h:
            for lin in (block.attn.c_q, block.attn.c_k, block.attn.c_v):
                lin._nanochat_init = ("uniform", -s, s)
            block.attn.c_proj._nanochat_init = ("zeros", 0.0, 0.0)
            block.mlp.c_fc._nanochat_init = ("uniform", -s * 0.4, s * 0.4)
            block.mlp.c_proj._nanochat_init = ("zeros", 0.0, 0.0)
            if block.attn.ve_gate is not None:
                block.attn.ve_gate._nanochat_init = ("uniform", 0.0, 0.02)
        for ve in self.value_embeds.values():
            ve._nanochat_init = ("uniform", -s, s)
        if self.smear_gate is not None:
            self.smear_gate._nanochat_init = ("uniform", 0.0, 0.02)
        # Rotary tables, as upstream: computed for 10x sequence_len positions (grown on demand),
        # kept out of the state_dict (upstream's buffers are non-persistent).
        self._rotary = None
        self.post_init()

    def get_input_embeddings(self):
        return self.transformer.wte

    def set_input_embeddings(self, value):
        self.transformer.wte = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def _rotary_tables(self, needed, device, dtype):
        """Upstream `_precompute_rotary_embeddings(10 * sequence_len, head_dim, base)`."""
        seq_len = max(self.config.sequence_len * 10, needed)
        cached = self._rotary
        if cached is None or cached[0].size(1) < needed or cached[0].device != device or cached[0].dtype != dtype:
            head_dim = self.config.n_embd // self.config.n_head
            channel_range = torch.arange(0, head_dim, 2, dtype=torch.float32, device=device)
            inv_freq = 1.0 / (self.config.rope_base ** (channel_range / head_dim))
            t = torch.arange(seq_len, dtype=torch.float32, device=device)
            freqs = torch.outer(t, inv_freq)
            cos, sin = freqs.cos().to(dtype), freqs.sin().to(dtype)
            self._rotary = (cos[None, :, None, :], sin[None, :, None, :])
        return self._rotary

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        cache=None,
        past_key_values=None,
        inputs_embeds=None,
        labels=None,
        use_cache=None,
        output_hidden_states=None,
        return_dict=None,
        logits_to_keep=0,
        smear_prev_ids=None,
        **kwargs,
    ):
        """`input_ids` (B, T) -> logits (B, T, vocab_size) after the softcap, in float32.
        `cache` (or `past_key_values`): a transformers `Cache`; with `use_cache` and none given a
        `DynamicCache` is made. `smear_prev_ids` (B, 1): the token before `input_ids[:, 0]` when
        the cache is not empty (generate() passes it); without it the previous embedding kept
        on the cache object by the last call is used. `position_ids` are not used: positions
        are the cache offset + 0..T-1, as upstream."""
        if input_ids is None or inputs_embeds is not None:
            raise ValueError("NanoChatRsForCausalLM needs input_ids (value embeddings are looked up by id)")
        if cache is None:
            cache = past_key_values
        if use_cache is None:
            use_cache = getattr(self.config, "use_cache", True)
        if cache is None and use_cache:
            cache = DynamicCache()
        if cache is not None and not isinstance(cache, Cache):
            raise TypeError("cache must be a transformers Cache (e.g. DynamicCache)")
        if output_hidden_states is None:
            output_hidden_states = getattr(self.config, "output_hidden_states", False)

        B, T = input_ids.shape
        T0 = cache.get_seq_length() if cache is not None else 0
        device = input_ids.device
        wte = self.transformer.wte
        dtype = wte.weight.dtype

        key_valid = None
        if attention_mask is not None:
            if attention_mask.dim() != 2:
                raise ValueError("only a 2-D attention_mask (B, past + T) is supported")
            if attention_mask.shape[1] != T0 + T:
                raise ValueError(f"attention_mask covers {attention_mask.shape[1]} tokens, expected {T0 + T}")
            if not bool(attention_mask.bool().all()):
                key_valid = attention_mask.bool().to(device)

        cos, sin = self._rotary_tables(T0 + T, device, dtype)
        cos_sin = cos[:, T0 : T0 + T], sin[:, T0 : T0 + T]

        x = wte(input_ids)
        x = norm(x)

        # Smear: mix the previous token's (normalised, pre-smear) embedding into each position.
        if self.smear_gate is not None:
            c = self.config.smear_gate_channels
            lam = self.smear_lambda.to(x.dtype)
            x_pre_smear = x
            prev = None
            if T0 > 0:
                if smear_prev_ids is not None:
                    prev = norm(wte(smear_prev_ids.reshape(B, 1).to(device)))
                else:
                    prev = getattr(cache, _PREV_EMBEDDING_ATTR, None)
                    if prev is None:
                        raise ValueError("cache is not empty: pass smear_prev_ids (the token before input_ids)")
            if cache is not None:
                setattr(cache, _PREV_EMBEDDING_ATTR, x_pre_smear[:, -1:, :].detach())
            if T > 1:
                gate = lam * torch.sigmoid(self.smear_gate(x[:, 1:, :c]))
                if key_valid is not None:
                    gate = gate * key_valid[:, T0 : T0 + T - 1, None].to(gate.dtype)
                rest = x[:, 1:] + gate * x[:, :-1]
            if prev is not None:
                gate0 = lam * torch.sigmoid(self.smear_gate(x[:, :1, :c]))
                if key_valid is not None:
                    gate0 = gate0 * key_valid[:, T0 - 1 : T0, None].to(gate0.dtype)
                first = x[:, :1] + gate0 * prev
            else:
                first = x[:, :1]
            x = torch.cat([first, rest], dim=1) if T > 1 else first

        x0 = x
        n_layer = self.config.n_layer
        backout_layer = n_layer // 2
        x_backout = None
        hidden_states = (x,) if output_hidden_states else None
        for i, block in enumerate(self.transformer.h):
            if self.resid_lambdas is not None:
                x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            ve = self.value_embeds[str(i)](input_ids).to(x.dtype) if str(i) in self.value_embeds else None
            x = block(x, ve, cos_sin, self.window_sizes[i], cache, key_valid)
            if i == backout_layer:
                x_backout = x
            if output_hidden_states:
                hidden_states = hidden_states + (x,)
        if self.backout_lambda is not None and x_backout is not None:
            x = x - self.backout_lambda.to(x.dtype) * x_backout
        x = norm(x)

        if isinstance(logits_to_keep, int):
            if logits_to_keep > 0:
                x = x[:, -logits_to_keep:, :]
        else:
            x = x[:, logits_to_keep, :]
        logits = self.lm_head(x)
        logits = logits[..., : self.config.vocab_size]
        logits = logits.float()
        softcap = self.config.logit_softcap
        if softcap > 0:
            logits = softcap * torch.tanh(logits / softcap)

        loss = None
        if labels is not None:
            shift_logits = logits[:, :-1, :].reshape(-1, logits.size(-1))
            shift_labels = labels[:, 1:].reshape(-1).to(shift_logits.device)
            loss = F.cross_entropy(shift_logits, shift_labels, ignore_index=-100)

        out = {"loss": loss, "logits": logits, "hidden_states": hidden_states}
        out[_CACHE_FIELD] = cache if use_cache else None
        return CausalLMOutputWithPast(**out)

    def prepare_inputs_for_generation(self, input_ids, *args, **kwargs):
        model_inputs = super().prepare_inputs_for_generation(input_ids, *args, **kwargs)
        # Smear needs the token just before the first one fed: generate() keeps the full
        # sequence, so hand it over (robust to beam reordering, unlike state kept on the cache).
        fed = model_inputs.get("input_ids")
        if self.config.smear and fed is not None and fed.shape[1] < input_ids.shape[1]:
            n = fed.shape[1]
            model_inputs["smear_prev_ids"] = input_ids[:, -n - 1 : -n]
        return model_inputs


__all__ = ["NanoChatRsConfig", "NanoChatRsForCausalLM", "NanoChatRsPreTrainedModel"]
