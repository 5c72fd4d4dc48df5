"""Checks a Hugging Face folder written by `nanochat export` against our Rust model's outputs.

    python hf_check.py EXPORT_DIR REFERENCE_JSON [--tol 1e-4] [--require-tokenizer]
    python hf_check.py --self-test    # fixture-based test of this script, no Rust needed

EXPORT_DIR: built-in format (model_type "nanochat") or remote-code format ("nanochat_rs").
REFERENCE_JSON: {"model", "prompts": [{"text", "ids" (BOS first), "logits", "greedy"}], "chat":
{"messages", "ids"}}. Checks: float32 load (all tensors, none extra), logits within --tol, greedy
generate (no EOS) == greedy, BOS + tokenizer(text) == ids, chat template == chat.ids (these two
skipped only without tokenizer files). A PASS/FAIL/SKIP line each, a JSON summary; exit 1 on FAIL.
"""

import argparse, json, math, os, subprocess, sys, tempfile, time

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

transformers.utils.logging.disable_progress_bar()
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
FORMATS = {"nanochat": "builtin", "nanochat_rs": "remote"}
RESULTS = []


def report(name, ok, detail):  # ok: True / False / None (skipped)
    RESULTS.append(ok)
    print(f"{'SKIP' if ok is None else 'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)


def load_model(d):
    """(model, {problem: tensor names}); transformers 5 takes `dtype`, 4.x `torch_dtype`."""
    kw = {"dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype": torch.float32}
    model, info = AutoModelForCausalLM.from_pretrained(d, trust_remote_code=True, output_loading_info=True, **kw)
    return model.eval(), {k: sorted(map(str, v)) for k, v in info.items() if k.endswith("_keys") and v}


def as_ids(out):
    """apply_chat_template: a BatchEncoding in 5.x (return_dict defaults to True), a list in 4.x."""
    out = out["input_ids"] if hasattr(out, "keys") else out
    out = out.tolist() if hasattr(out, "tolist") else out
    return [int(t) for t in (out[0] if out and isinstance(out[0], list) else out)]


def first_mismatch(a, b):
    i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    return i if i is not None or len(a) == len(b) else min(len(a), len(b))


@torch.no_grad()
def check_export(s, export_dir, ref, tol, require_tokenizer):
    """Fills the summary `s` as the checks go (an exception leaves what was measured so far)."""
    cfg = json.load(open(os.path.join(export_dir, "config.json")))
    s["format"] = FORMATS.get(cfg.get("model_type"))
    report("format", s["format"] is not None, f"model_type {cfg.get('model_type')!r}, {cfg.get('architectures')}")

    # 1. load
    t0 = time.perf_counter()
    model, problems = load_model(export_dir)
    tok, has_tok = None, any(os.path.exists(os.path.join(export_dir, f)) for f in TOKENIZER_FILES)
    try:
        tok = AutoTokenizer.from_pretrained(export_dir, trust_remote_code=True) if has_tok else None
    except Exception as e:
        report("load tokenizer", False, f"{type(e).__name__}: {e}")
    s["load_s"] = round(time.perf_counter() - t0, 3)
    names = type(model).__name__ + ("" if tok is None else " + " + type(tok).__name__)
    report("load", not problems, f"{names} in {s['load_s']:.2f}s, tensors: {problems or 'as expected'} "
           f"(transformers {transformers.__version__}, torch {torch.__version__})")
    prompts = ref["prompts"]
    bos = next(b for b in (None if tok is None else tok.bos_token_id, model.generation_config.bos_token_id,
                           getattr(model.config, "bos_token_id", None), prompts[0]["ids"][0]) if b is not None)

    # 2. logits (the model may have more vocab columns than the reference: compare the first ones)
    worst, shape_ok, extra = 0.0, True, set()
    for i, p in enumerate(prompts):
        got = model(input_ids=torch.tensor([p["ids"]]), use_cache=False).logits[0].float()
        want = torch.tensor(p["logits"], dtype=torch.float32)
        if got.shape[0] != want.shape[0] or got.shape[1] < want.shape[1]:
            shape_ok = False
            print(f"  prompt {i}: logits shape {tuple(got.shape)}, reference {tuple(want.shape)}")
            continue
        extra.add(got.shape[1] - want.shape[1])
        d = (got[:, : want.shape[1]] - want).abs().max().item()
        worst = d if math.isnan(d) else max(worst, d)
        print(f"  prompt {i}: {len(p['ids'])} tokens, max abs diff {d:.3e}")
    note = f"; model has {sorted(extra)} extra vocab columns, compared the first {want.shape[1]}" if any(extra) else ""
    s["max_abs_logit_diff"] = worst if shape_ok and math.isfinite(worst) else None
    report("logits", shape_ok and worst <= tol, f"max abs diff {worst:.3e}, {len(prompts)} prompts, tol {tol:g}{note}")

    # 3. greedy generation without EOS. Both places are needed in 5.x: a GenerationConfig passed
    # with eos None gets it refilled from generation_config.json; only the kwarg None wins.
    model.generation_config.eos_token_id = None
    s["greedy_match"] = True
    for i, p in [(i, p) for i, p in enumerate(prompts) if p["greedy"]]:
        ids = torch.tensor([p["ids"]])
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=len(p["greedy"]),
                             do_sample=False, eos_token_id=None, pad_token_id=bos)
        new = getattr(out, "sequences", out)[0, ids.shape[1]:].tolist()
        at = first_mismatch(new, p["greedy"])
        s["greedy_match"] &= at is None
        tail = "" if at is None else f", reference {p['greedy']}, first mismatch at {at}"
        print(f"  prompt {i}: generated {new}{tail}")
    report("greedy generate", s["greedy_match"], f"{len(prompts)} prompts, pad_token_id {bos}")

    # 4. tokenizer, 5. chat template
    if not has_tok and not require_tokenizer:
        for name in ("tokenizer", "chat template"):
            report(name, None, "skipped: no tokenizer.json")
        return s
    if tok is None:
        s["tokenizer_match"] = s["chat_template_match"] = False
        report("tokenizer", False, "no tokenizer loaded")
        return s
    bad = []
    for i, p in enumerate(prompts):
        enc = [tok.bos_token_id] + list(tok(p["text"], add_special_tokens=False).input_ids)
        if enc != p["ids"]:
            bad.append(i)
            print(f"  prompt {i} {p['text']!r}: tokenizer {enc}, reference {p['ids']}, "
                  f"first mismatch at {first_mismatch(enc, p['ids'])}")
    s["tokenizer_match"] = not bad
    report("tokenizer", not bad, f"bos {tok.bos_token_id!r}, {len(prompts) - len(bad)}/{len(prompts)} prompts equal")
    want, s["chat_template_match"] = ref["chat"]["ids"], False
    try:
        got = as_ids(tok.apply_chat_template(ref["chat"]["messages"], tokenize=True, add_generation_prompt=True))
    except Exception as e:
        report("chat template", False, f"{type(e).__name__}: {e}")
        return s
    at = first_mismatch(got, want)
    if at is not None:
        print(f"  chat template: {got}\n  reference:     {want}\n  first mismatch at {at}")
    s["chat_template_match"] = at is None
    report("chat template", at is None, f"{len(got)} ids, reference {len(want)} ids")
    return s


def self_test(fixtures):
    """Remote-format export of the model fixture (built as check_fixture.py does) against a reference
    made of the fixture's logits: must pass, and fail once perturbed."""
    from safetensors.torch import load_file
    sys.dont_write_bytecode = True  # no __pycache__ among the crate's sources
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../crates/nanochat-model/src/hf_remote"))
    import check_fixture as cf
    st = load_file(os.path.join(fixtures, "gpt_sssl_gqa.safetensors"))
    meta = json.load(open(os.path.join(fixtures, "gpt_sssl_gqa.json")))
    params = {k[len("param."):]: v for k, v in st.items() if k.startswith("param.")}
    with tempfile.TemporaryDirectory(prefix="hf_check_") as work:
        d, path = os.path.join(work, "export"), os.path.join(work, "reference.json")
        cf.write_folder(d, cf.hf_config(meta["config"]), params)
        model, prompts = load_model(d)[0], []
        for row in (0, 1):
            seq = st["input.idx"][row, :16].tolist()
            with torch.no_grad():  # greedy continuation from full forwards, independent of generate()
                for _ in range(4):
                    seq.append(int(model(input_ids=torch.tensor([seq]), use_cache=False).logits[0, -1].argmax()))
            prompts.append({"text": f"(fixture input.idx row {row})", "ids": seq[:16],
                            "logits": st["output.logits"][row, :16].tolist(), "greedy": seq[16:]})
        ref = {"model": "fixture gpt_sssl_gqa", "prompts": prompts, "chat": {"messages": [], "ids": []}}
        bad_logit, bad_greedy = json.loads(json.dumps(ref)), json.loads(json.dumps(ref))
        bad_logit["prompts"][0]["logits"][3][7] += 1e-2
        bad_greedy["prompts"][1]["greedy"][2] = (prompts[1]["greedy"][2] + 1) % meta["config"]["vocab_size"]
        ok = True
        for name, r, want_rc in (("reference", ref, 0), ("one logit + 1e-2", bad_logit, 1),
                                 ("one greedy token changed", bad_greedy, 1)):
            with open(path, "w") as f:
                json.dump(r, f)
            print(f"--- self-test: {name} (expect exit {want_rc})", flush=True)
            rc = subprocess.run([sys.executable, os.path.abspath(__file__), d, path]).returncode
            print(f"--- self-test: {name}: exit {rc}, {'as expected' if rc == want_rc else 'UNEXPECTED'}", flush=True)
            ok &= rc == want_rc
    print(f"self-test {'passed' if ok else 'FAILED'}")
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("paths", nargs="*", metavar="EXPORT_DIR REFERENCE_JSON")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--require-tokenizer", action="store_true", help="fail, not skip, without tokenizer files")
    ap.add_argument("--self-test", action="store_true")
    ap.add_argument("--fixtures", default=os.environ.get("NANOCHAT_FIXTURES", "/work/shared/fixtures/model"))
    args = ap.parse_args()
    if args.self_test:
        sys.exit(self_test(args.fixtures))
    if len(args.paths) != 2:
        ap.error("EXPORT_DIR and REFERENCE_JSON are required (or --self-test)")
    export_dir, reference_json = args.paths
    s = {"export": export_dir, "format": None, "max_abs_logit_diff": None, "greedy_match": None,
         "tokenizer_match": None, "chat_template_match": None, "load_s": None, "passed": False}
    try:
        check_export(s, export_dir, json.load(open(reference_json)), args.tol, args.require_tokenizer)
    except Exception as e:  # a load error or anything unforeseen still ends with the summary line
        report("error", False, f"{type(e).__name__}: {e}")
    s["passed"] = bool(RESULTS) and all(r is not False for r in RESULTS) and s.get("max_abs_logit_diff") is not None
    print(json.dumps(s), flush=True)
    sys.exit(0 if s["passed"] else 1)


if __name__ == "__main__":
    main()
