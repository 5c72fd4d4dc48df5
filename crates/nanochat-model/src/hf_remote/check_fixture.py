"""Checks the transformers remote code in this folder against upstream nanochat's outputs.

Needs torch, transformers and safetensors (CPU is enough). Run:

    python crates/nanochat-model/src/hf_remote/check_fixture.py [--fixtures DIR] [--keep DIR]

It builds a Hugging Face folder the way the Rust exporter should (config.json written by hand
with `auto_map`, the two .py files copied in, model.safetensors with upstream's parameter names
and shapes, vocab rows padded), loads it with
`AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)` and compares:

1. logits of `input.idx` with upstream's `output.logits`, and the loss with `output.loss`;
   upstream's own `upstream_ckpt/model_000000.pt` state_dict loads strictly with the same result;
2. KV-cache decoding (prefill 192, then 8 single tokens) with `output.decode_logits`;
3. greedy `generate` of 8 tokens from row 0's first 192 tokens with and without the cache: the
   same tokens, and each step's logits equal to a full forward's;
4. a left-padded batch generates like the unpadded rows (not an upstream feature);
5. other shapes (odd depth, MQA, pattern "SL", features off) built with `from_config`:
   upstream's init, and cached decoding equal to the full forward.

Prints one line per check and a closing "N passed, N failed"; exits 1 on a failure.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
REMOTE_FILES = ("configuration_nanochat_rs.py", "modeling_nanochat_rs.py")
AUTO_MAP = {
    "AutoConfig": "configuration_nanochat_rs.NanoChatRsConfig",
    "AutoModelForCausalLM": "modeling_nanochat_rs.NanoChatRsForCausalLM",
}

RESULTS = []


def check(name, ok, detail):
    RESULTS.append(ok)
    print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)


def hf_config(gpt_config, **switches):
    """The config.json the Rust exporter writes (every key it must write)."""
    cfg = {
        "architectures": ["NanoChatRsForCausalLM"],
        "model_type": "nanochat_rs",
        "auto_map": AUTO_MAP,
        # upstream GPTConfig
        "sequence_len": gpt_config["sequence_len"],
        "vocab_size": gpt_config["vocab_size"],
        "n_layer": gpt_config["n_layer"],
        "n_head": gpt_config["n_head"],
        "n_kv_head": gpt_config["n_kv_head"],
        "n_embd": gpt_config["n_embd"],
        "window_pattern": gpt_config["window_pattern"],
        # architecture switches / constants (upstream HEAD values)
        "rope_base": 100000.0,
        "value_embeds": True,
        "smear": True,
        "backout": True,
        "layer_lambdas": True,
        "qk_scale": 1.2,
        "logit_softcap": 15.0,
        "vocab_pad_multiple": 64,
        "padded_vocab_size": None,
        "ve_gate_channels": 12,
        "smear_gate_channels": 24,
        "tie_word_embeddings": False,
        "use_cache": True,
        "torch_dtype": "float32",
    }
    cfg.update(switches)
    m = cfg["vocab_pad_multiple"]
    cfg["padded_vocab_size"] = -(-cfg["vocab_size"] // m) * m
    return cfg


def write_folder(d, config, tensors):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    for name in REMOTE_FILES:
        shutil.copy(os.path.join(HERE, name), os.path.join(d, name))
    if tensors is not None:
        save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})


def load(d):
    model, info = AutoModelForCausalLM.from_pretrained(
        d, trust_remote_code=True, torch_dtype=torch.float32, output_loading_info=True
    )
    model.eval()
    return model, info


def gen(model, prompt, n, use_cache, attention_mask=None):
    if attention_mask is None:
        attention_mask = torch.ones_like(prompt)
    out = model.generate(
        input_ids=prompt,
        attention_mask=attention_mask,
        max_new_tokens=n,
        min_new_tokens=n,
        do_sample=False,
        use_cache=use_cache,
        return_dict_in_generate=True,
        output_logits=True,
    )
    return out.sequences, torch.stack(out.logits, dim=1)  # (B, n, V)


def cached_decode(model, ids, prefill):
    """Prefill `prefill` tokens, then one token at a time; logits of every fed position."""
    from transformers import DynamicCache

    cache = DynamicCache()
    out = model(input_ids=ids[:, :prefill], cache=cache, use_cache=True)
    logits = [out.logits]
    for t in range(prefill, ids.shape[1]):
        out = model(input_ids=ids[:, t : t + 1], cache=cache, use_cache=True)
        logits.append(out.logits)
    return torch.cat(logits, dim=1)


def fixture_checks(fixtures, work):
    meta = json.load(open(os.path.join(fixtures, "gpt_sssl_gqa.json")))
    st = load_file(os.path.join(fixtures, "gpt_sssl_gqa.safetensors"))
    params = {k[len("param."):]: v for k, v in st.items() if k.startswith("param.")}
    idx, ref_logits = st["input.idx"], st["output.logits"]
    d = os.path.join(work, "gpt_sssl_gqa")
    config = hf_config(meta["config"])
    write_folder(d, config, params)
    print("config.json:", json.dumps(config), flush=True)
    model, info = load(d)

    bad = {k: sorted(v) for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    check("load", not bad and sorted(model.state_dict()) == sorted(params), f"{len(params)} tensors, problems: {bad or 'none'}")
    check("padded vocab", model.config.padded_vocab_size == meta["padded_vocab"], f"{model.config.padded_vocab_size}")
    windows = [list(w) for w in model.window_sizes]
    check("window sizes", windows == meta["window_sizes"], f"{windows}")

    with torch.no_grad():
        logits = model(input_ids=idx, use_cache=False).logits
        diff = (logits - ref_logits).abs().max().item()
        rel = diff / ref_logits.abs().max().item()
        check("forward logits vs output.logits", tuple(logits.shape) == tuple(ref_logits.shape) and diff <= 1e-4,
              f"shape {tuple(logits.shape)}, max abs diff {diff:.3e}, relative {rel:.3e}")
        targets = st["input.targets"]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        ldiff = abs(loss.item() - st["output.loss"].item())
        check("loss vs output.loss", ldiff <= 1e-4, f"{loss.item():.6f} vs {st['output.loss'].item():.6f}, diff {ldiff:.3e}")

        prefill = meta["decode_prefill"]
        dec = cached_decode(model, idx[:1], prefill)
        fdiff = (dec - logits[:1]).abs().max().item()
        check("KV-cache decode vs full forward", fdiff <= 1e-4, f"max abs diff {fdiff:.3e} over {dec.shape[1]} positions")

    # Upstream's own checkpoint (`torch.save` of its state_dict) loads as it is.
    pt = os.path.join(fixtures, "upstream_ckpt", "model_000000.pt")
    if os.path.exists(pt):
        sd = torch.load(pt, map_location="cpu", weights_only=True)
        sd = {k.removeprefix("_orig_mod."): v for k, v in sd.items()}
        model.load_state_dict(sd, strict=True)
        with torch.no_grad():
            pdiff = (model(input_ids=idx, use_cache=False).logits - ref_logits).abs().max().item()
        check("upstream model_000000.pt state_dict (strict load)", pdiff <= 1e-4, f"max abs diff {pdiff:.3e}")

    # The fixture generator ran its KV-cache decode after its two optimizer steps, so
    # `output.decode_logits` belong to the `step2.*` parameters when the file has them.
    prefix = "step2." if any(k.startswith("step2.") for k in st) else "param."
    step2 = {k[len(prefix):]: v for k, v in st.items() if k.startswith(prefix)}
    d2 = os.path.join(work, "gpt_sssl_gqa_step2")
    write_folder(d2, config, step2)
    model2, _ = load(d2)
    with torch.no_grad():
        ref_dec = st["output.decode_logits"]
        dec = cached_decode(model2, idx[:1], prefill)
        ddiff = (dec[:, prefill - 1 : prefill - 1 + ref_dec.shape[1]] - ref_dec).abs().max().item()
        check(f"KV-cache decode ({prefix}* weights) vs output.decode_logits", ddiff <= 1e-4, f"max abs diff {ddiff:.3e}")

    with torch.no_grad():

        prompt = idx[:1, :prefill]
        seq_c, lg_c = gen(model, prompt, 8, use_cache=True)
        seq_n, lg_n = gen(model, prompt, 8, use_cache=False)
        full = model(input_ids=seq_c, use_cache=False).logits[:, prefill - 1 : prefill - 1 + 8]
        new_c, new_n = seq_c[0, prefill:].tolist(), seq_n[0, prefill:].tolist()
        greedy_ok = all(int(t) == int(a) for t, a in zip(new_c, full[0].argmax(-1).tolist()))
        dc, dn = (lg_c - full).abs().max().item(), (lg_n - full).abs().max().item()
        check("generate cache == no cache", new_c == new_n and greedy_ok, f"tokens {new_c}")
        check("generate step logits vs full forward", dc <= 1e-4 and dn <= 1e-4, f"with cache {dc:.3e}, without cache {dn:.3e}")
        upstream_greedy = ref_logits[0, prefill - 1].argmax().item()
        check("first generated token = upstream argmax", new_c[0] == upstream_greedy, f"{new_c[0]} vs {upstream_greedy}")

        # Left padding (not in upstream): row 1 shortened to 150 tokens, padded on the left.
        short, pad = 150, prefill - 150
        row1 = idx[1:2, :short]
        batch = torch.cat([idx[:1, :prefill], torch.cat([torch.zeros(1, pad, dtype=idx.dtype), row1], 1)], 0)
        mask = torch.ones_like(batch)
        mask[1, :pad] = 0
        seq_b, lg_b = gen(model, batch, 8, use_cache=True, attention_mask=mask)
        seq_1, lg_1 = gen(model, row1, 8, use_cache=True)
        pdiff = max((lg_b[0] - lg_c[0]).abs().max().item(), (lg_b[1] - lg_1[0]).abs().max().item())
        same = seq_b[0, prefill:].tolist() == new_c and seq_b[1, prefill:].tolist() == seq_1[0, short:].tolist()
        check("left-padded batch == unpadded rows", same and pdiff <= 1e-4, f"max logit diff {pdiff:.3e}")


def shape_checks(work):
    torch.manual_seed(0)
    shapes = [
        ("odd depth, MQA, SL", dict(sequence_len=256, vocab_size=300, n_layer=3, n_head=2, n_kv_head=1, n_embd=64, window_pattern="SL"), {}),
        ("features off (v0-like)", dict(sequence_len=256, vocab_size=300, n_layer=2, n_head=2, n_kv_head=2, n_embd=64, window_pattern="L"),
         dict(rope_base=10000.0, value_embeds=False, smear=False, backout=False, layer_lambdas=False, qk_scale=1.0, vocab_pad_multiple=1)),
    ]
    for name, gpt, switches in shapes:
        d = os.path.join(work, "shape_%d" % len(RESULTS))
        config = hf_config(gpt, **switches)
        write_folder(d, config, None)
        cfg = AutoConfig.from_pretrained(d, trust_remote_code=True)
        model = AutoModelForCausalLM.from_config(cfg, trust_remote_code=True, torch_dtype=torch.float32).eval()
        sd = model.state_dict()
        init_ok = all(sd[k].abs().max().item() == 0 for k in sd if k.endswith("c_proj.weight"))
        if cfg.layer_lambdas:
            n = cfg.n_layer
            want = torch.tensor([1.15 - 0.10 * i / max(n - 1, 1) for i in range(n)])
            init_ok = init_ok and torch.allclose(sd["resid_lambdas"], want) and abs(sd["backout_lambda"].item() - 0.2) < 1e-7
        init_ok = init_ok and abs(sd["transformer.wte.weight"].std().item() - 0.8) < 0.05
        check(f"{name}: upstream init", init_ok, f"{len(sd)} tensors")
        # Zero-initialised paths carry signal only after a perturbation, as in the fixture.
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.02)
            ids = torch.randint(0, cfg.vocab_size, (2, 200))
            full = model(input_ids=ids, use_cache=False).logits
            dec = cached_decode(model, ids[:1], 150)
            diff = (dec - full[:1]).abs().max().item()
            check(f"{name}: cached decode vs full forward", diff <= 1e-4, f"max abs diff {diff:.3e}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fixtures", default=os.environ.get("NANOCHAT_FIXTURES", "/work/shared/fixtures/model"))
    ap.add_argument("--keep", help="build the folders here and keep them")
    args = ap.parse_args()
    import transformers

    print(f"torch {torch.__version__}, transformers {transformers.__version__}", flush=True)
    work = args.keep or tempfile.mkdtemp(prefix="nanochat_rs_hf_")
    try:
        fixture_checks(args.fixtures, work)
        shape_checks(work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    passed = sum(RESULTS)
    print(f"{passed} passed, {len(RESULTS) - passed} failed")
    sys.exit(0 if passed == len(RESULTS) else 1)


if __name__ == "__main__":
    main()
