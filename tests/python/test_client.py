#!/usr/bin/python3
"""Tests of clients/python/strata_client.py against a real strata-server.

Runs with Debian's /usr/bin/python3 (python3-numpy, python3-requests); no pytest:
every function named test_* runs, the summary line is "N passed, M failed" and the
exit status is non-zero on failure. It starts its own servers (STRATA_SERVER, the
moe-small fixture of STRATA_SHARED and the demo model under STRATA_ROOT).
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np

ROOT = os.environ.get("STRATA_ROOT", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
SHARED = os.environ.get("STRATA_SHARED", os.path.join(ROOT, "..", "shared"))
SERVER = os.environ.get("STRATA_SERVER", os.path.join(ROOT, "build", "strata-server"))
sys.path.insert(0, os.path.join(ROOT, "clients", "python"))

from strata_client import Client, StrataError, parse_safetensors  # noqa: E402

FIXTURE = os.path.join(SHARED, "fixtures", "models", "moe-small")
DEMO = os.path.join(ROOT, "models", "strata-demo")


class Server:
    """strata-server on a free port; stderr goes to a temporary file."""

    def __init__(self, model):
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([SERVER, "--model", model, "--port", "0"], stderr=self.log,
                                     stdout=subprocess.DEVNULL)
        self.port = None
        for _ in range(400):
            self.log.seek(0)
            m = re.search(rb"listening on http://127\.0\.0\.1:(\d+)", self.log.read())
            if m:
                self.port = int(m.group(1))
                break
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        if not self.port:
            raise RuntimeError("strata-server did not start")
        self.client = Client(f"http://127.0.0.1:{self.port}")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


def tolerance_ok(actual, expected):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    tol = 1e-4 + 1e-4 * np.abs(expected).max()
    diff = np.abs(actual - expected).max()
    return diff <= tol, diff, tol


with open(os.path.join(FIXTURE, "expected.safetensors"), "rb") as f:
    EXPECTED, _ = parse_safetensors(f.read())
IDS = [int(x) for x in EXPECTED["input_ids"]]
FIXTURE_NAMES = [n for n in EXPECTED if n != "input_ids" and not n.startswith(("decode.", "greedy."))]
GLOBS = ["embed.hook_out", "blocks.*.hook_in", "blocks.*.hook_out", "blocks.*.mixer.hook_in",
         "blocks.*.mixer.hook_out", "ln_final.hook_out", "logits", "blocks.*.mixer.conv_state",
         "blocks.*.mixer.ssm_state", "blocks.*.mixer.k_cache", "blocks.*.mixer.v_cache",
         "blocks.*.mixer.hook_router_logits", "blocks.*.mixer.hook_expert_indices",
         "blocks.*.mixer.hook_expert_weights"]

S = None   # the fixture server
D = None   # the demo server


def check_against_fixture(cache):
    for name in FIXTURE_NAMES:
        assert name in cache, f"missing {name}"
        got, exp = cache[name], EXPECTED[name]
        if exp.dtype == np.int32:
            assert np.array_equal(got, exp), name
        else:
            ok, diff, tol = tolerance_ok(got, exp)
            assert ok, f"{name}: {diff} > {tol}"


def test_hooks_listing():
    hooks = S.client.hooks()
    names = {h["name"]: h for h in hooks}
    assert names["blocks.3.mixer.hook_pattern"]["layer_kind"] == "attention"
    assert names["blocks.0.mixer.hook_ssm_dt"]["shape"] == ["P", 8]
    assert names["blocks.1.mixer.hook_expert_indices"]["dtype"] == "int32"
    assert not names["blocks.0.mixer.ssm_state"]["interveneable"]
    assert names["blocks.6.mixer.hook_pre"]["interveneable"]


def test_run_with_cache_matches_fixture_safetensors():
    logits, cache = S.client.run_with_cache(IDS, names_filter=GLOBS)
    check_against_fixture(cache)
    assert logits.shape == (len(IDS), 512)


def test_json_format_matches_fixture():
    resp = S.client.activations(IDS, GLOBS, format="json")
    cache = {k: np.asarray(v["data"], np.int32 if v["dtype"] == "int32" else np.float32).reshape(v["shape"])
             for k, v in resp["activations"].items()}
    check_against_fixture(cache)
    assert resp["tokens"]["ids"] == IDS


def test_npy_format_matches_fixture():
    import io
    for name in FIXTURE_NAMES:
        r = S.client._post("/v1/activations", {"prompt": IDS, "hooks": [name], "format": "npy"})
        arr = np.load(io.BytesIO(r.content))
        if arr.dtype == np.int32:
            assert np.array_equal(arr, EXPECTED[name]), name
        else:
            ok, diff, tol = tolerance_ok(arr, EXPECTED[name])
            assert ok, f"{name}: {diff} > {tol}"


def test_derived_mlp_and_pattern():
    _, c = S.client.run_with_cache(IDS, ["blocks.6.mixer.hook_pre", "blocks.6.mixer.hook_post",
                                         "blocks.3.mixer.hook_pattern"])
    pre, post = c["blocks.6.mixer.hook_pre"], c["blocks.6.mixer.hook_post"]
    assert np.allclose(post, np.maximum(pre, 0) ** 2, rtol=1e-5, atol=1e-6)
    pat = c["blocks.3.mixer.hook_pattern"]
    assert pat.shape == (4, len(IDS), len(IDS))
    assert np.allclose(pat.sum(-1), 1, atol=1e-5)
    assert np.all(np.triu(pat, 1) == 0)


def test_moe_output_from_routing():
    # zero routing weights: the MoE output is the shared expert alone
    iv = [{"hook": "blocks.7.mixer.hook_expert_weights", "op": "zero"}]
    _, c = S.client.run_with_interventions(IDS, iv, ["blocks.7.mixer.hook_out",
                                                     "blocks.7.mixer.shared_experts.hook_out"])
    assert np.array_equal(c["blocks.7.mixer.hook_out"], c["blocks.7.mixer.shared_experts.hook_out"])


def test_positions():
    _, full = S.client.run_with_cache(IDS, "blocks.2.hook_out")
    _, last = S.client.run_with_cache(IDS, "blocks.2.hook_out", positions="last")
    _, some = S.client.run_with_cache(IDS, "blocks.2.hook_out", positions=[0, -2])
    f = full["blocks.2.hook_out"]
    assert np.array_equal(last["blocks.2.hook_out"], f[-1:])
    assert np.array_equal(some["blocks.2.hook_out"], f[[0, -2]])


def test_add_then_subtract_is_identity():
    v = np.linspace(-1, 1, 64).astype(np.float32)
    iv = [{"hook": "blocks.0.hook_out", "op": "add", "value": v},
          {"hook": "blocks.0.hook_out", "op": "add", "value": -v}]
    logits, _ = S.client.run_with_interventions(IDS, iv)
    ok, diff, tol = tolerance_ok(logits, EXPECTED["logits"])
    assert ok, (diff, tol)


def test_self_patch_is_identity():
    a, b = S.client.patch(IDS, IDS, "blocks.*.hook_out")
    assert np.array_equal(a["logits"], b["logits"])


def test_patch_clean_into_corrupted_restores_logits():
    corrupted = list(IDS)
    corrupted[5] = (corrupted[5] + 7) % 512
    clean, patched = S.client.patch(IDS, corrupted, "blocks.7.hook_out", positions="all")
    assert np.array_equal(clean["logits"], patched["logits"]), "patching the last block restores everything"
    _, emb = S.client.patch(IDS, corrupted, "embed.hook_out", positions=[5])
    assert np.array_equal(emb["logits"], clean["logits"]), "position 5 was the only difference"
    _, later = S.client.patch(IDS, corrupted, "blocks.0.hook_out", positions=[5])
    assert not np.array_equal(later["logits"], clean["logits"]), "the Mamba state already carried the corruption"


def test_zero_mixer_equals_layer_removed():
    iv = [{"hook": "blocks.5.mixer.hook_out", "op": "zero"}]
    _, z = S.client.run_with_interventions(IDS, iv, ["blocks.5.hook_in", "blocks.5.hook_out", "logits"])
    assert np.array_equal(z["blocks.5.hook_in"], z["blocks.5.hook_out"])
    # reference: set the block's output to its input, i.e. skip it
    _, ref = S.client.run_with_interventions(
        IDS, [{"hook": "blocks.5.hook_out", "op": "set", "value": z["blocks.5.hook_in"]}], ["logits"])
    ok, diff, tol = tolerance_ok(z["logits"], ref["logits"])
    assert ok, (diff, tol)


def test_ablate_and_project_out():
    iv = [{"hook": "blocks.4.mixer.hook_router_logits", "op": "ablate_experts", "experts": [3, 4]}]
    _, c = S.client.run_with_interventions(IDS, iv, ["blocks.4.mixer.hook_expert_indices"])
    assert not np.isin(c["blocks.4.mixer.hook_expert_indices"], [3, 4]).any()
    d = np.random.default_rng(0).normal(size=64).astype(np.float32)
    _, p = S.client.run_with_interventions(IDS, [{"hook": "blocks.2.hook_out", "op": "project_out", "direction": d}],
                                           ["blocks.2.hook_out"])
    assert np.abs(p["blocks.2.hook_out"] @ d).max() < 1e-3


def test_errors_are_clear():
    cases = [
        (dict(hooks=["blocks.1.mixer.hook_pattern"]), 422, "exists on layers"),
        (dict(hooks=["blocks.1.mixer.hook_ot"]), 422, "nearest"),
        (dict(hooks=["logits"], positions=[99]), 422, "outside"),
        (dict(interventions=[{"hook": "blocks.0.hook_out", "op": "add", "value": [1.0, 2.0]}]), 422, "expected"),
    ]
    for kw, status, needle in cases:
        try:
            S.client.activations(IDS[:5], kw.pop("hooks", ["logits"]), **kw)
        except StrataError as e:
            assert e.status == status and needle in e.message, (kw, e)
        else:
            raise AssertionError(f"{kw} was accepted")
    r = S.client.http.post(S.client.url + "/v1/activations",
                           data='{"prompt":[1,2],"interventions":[{"hook":"blocks.0.hook_out","op":"add","value":[NaN]}]}')
    assert r.status_code == 400
    try:
        S.client.activations(IDS[:2], ["logits"], session="no-such-session")
    except StrataError as e:
        assert e.status == 404
    else:
        raise AssertionError("an unknown session was accepted")
    assert S.client.run_with_cache([1, 2, 3], "logits")[0].shape == (3, 512), "server unharmed"


def test_steering_changes_greedy_generation():
    c = D.client
    plain = c.generate("And God said", max_tokens=16)
    _, a = c.run_with_cache("the LORD", "blocks.6.hook_out", positions="last")
    _, b = c.run_with_cache("the people", "blocks.6.hook_out", positions="last")
    v = a["blocks.6.hook_out"][-1] - b["blocks.6.hook_out"][-1]
    steered = c.generate("And God said", max_tokens=16,
                         interventions=[{"hook": "blocks.6.hook_out", "op": "add", "value": 8 * v}])
    assert steered != plain, (plain, steered)
    text, acts = c.generate("And God said", max_tokens=6, hooks=["blocks.1.mixer.hook_expert_indices", "logits"])
    assert acts["logits"].shape[0] == acts["blocks.1.mixer.hook_expert_indices"].shape[0] == 6
    assert text == plain[:len(text)]


def test_sessions_dry_run_and_commit():
    c = S.client
    sess = c.session(IDS[:10])
    assert sess.info()["n_tokens"] == 10
    whole, _ = c.run_with_cache(IDS[:14], "logits")
    # a dry run continues the session without changing it
    logits, acts = sess.run_with_cache(IDS[10:14], "blocks.3.mixer.hook_pattern")
    assert tolerance_ok(logits, whole[10:14]), "continuing the session equals the whole run"
    pattern = acts["blocks.3.mixer.hook_pattern"]
    assert pattern.shape[-1] == 14, "the pattern covers the session's past keys too"
    assert sess.info()["n_tokens"] == 10, "a dry run leaves the session unchanged"
    again, _ = sess.run_with_cache(IDS[10:14])
    assert np.array_equal(again, logits)
    # commit keeps the state; a steered commit changes what follows
    sess.run_with_cache(IDS[10:12], commit=True)
    assert sess.info()["n_tokens"] == 12
    tail, _ = sess.run_with_cache(IDS[12:14])
    assert tolerance_ok(tail, whole[12:14])
    fork = sess.fork()
    steer = [{"hook": "blocks.0.hook_out", "op": "scale", "factor": 3.0}]
    c.activations(IDS[12:13], ["logits"], session=fork.id, interventions=steer, commit=True)
    steered, _ = fork.run_with_cache(IDS[13:14])
    plain, _ = sess.run_with_cache(IDS[12:14])
    assert not np.allclose(steered[-1], plain[-1]), "the intervention reached the fork's recurrent state"
    sess.rewind(10)
    back, _ = sess.run_with_cache(IDS[10:14])
    assert tolerance_ok(back, whole[10:14]), "rewind restores the earlier state"


def main():
    global S, D
    S, D = Server(FIXTURE), Server(DEMO)
    passed = failed = 0
    try:
        for name, fn in sorted((n, f) for n, f in globals().items() if n.startswith("test_") and callable(f)):
            try:
                fn()
                passed += 1
                print(f"ok   {name}")
            except Exception:
                failed += 1
                print(f"FAIL {name}")
                traceback.print_exc()
    finally:
        S.stop()
        D.stop()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
