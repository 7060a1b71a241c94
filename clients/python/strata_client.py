"""strata_client — a notebook client for strata-server's interpretability API.

Look inside a Nemotron-H hybrid (Mamba-2, attention, MLP, MoE layers) running on a
remote strata-server, TransformerLens style, with nothing but ``requests`` and
``numpy``:

    from strata_client import Client
    c = Client("http://127.0.0.1:8080")
    logits, cache = c.run_with_cache("In the beginning God", names_filter="blocks.*.hook_out")
    cache["blocks.3.hook_out"].shape          # (positions, d_model)

Results travel as safetensors (parsed here with numpy; no other dependency).
Interventions are plain dicts, as in the HTTP API (docs/api.md, Activations)::

    {"hook": "blocks.4.hook_out", "op": "add", "value": vec, "positions": "all"}
    ops: zero | scale (factor) | add (value) | set (value) | patch (source) |
         project_out (direction) | ablate_experts (experts)

numpy arrays in interventions are converted to lists for you.
"""

import json
import struct

import numpy as np
import requests

__all__ = ["Client", "StrataError", "parse_safetensors", "Session"]

_DTYPES = {"F32": np.float32, "I32": np.int32, "F16": np.float16, "I64": np.int64, "F64": np.float64,
           "BF16": None}


class StrataError(Exception):
    """An error response of the server: .status, .code, .param and the message."""

    def __init__(self, status, message, code=None, param=None):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.param, self.message = status, code, param, message


def parse_safetensors(data):
    """bytes of a .safetensors file -> (dict name -> numpy array, metadata dict)."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + n
    out = {}
    for name, info in header.items():
        dt = _DTYPES.get(info["dtype"])
        if dt is None:
            raise ValueError(f"tensor {name}: dtype {info['dtype']} is not supported")
        a, b = info["data_offsets"]
        arr = np.frombuffer(data, dtype=np.dtype(dt).newbyteorder("<"), count=(b - a) // np.dtype(dt).itemsize,
                            offset=base + a)
        out[name] = arr.reshape(info["shape"]).copy()
    return out, meta


def _jsonable(x):
    if isinstance(x, np.ndarray):
        return x.astype(np.float64).tolist() if x.dtype.kind == "f" else x.tolist()
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


class Client:
    """A strata-server at url. api_key: sent as a Bearer token when given."""

    def __init__(self, url="http://127.0.0.1:8080", api_key=None, timeout=600):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.http = requests.Session()
        if api_key:
            self.http.headers["Authorization"] = f"Bearer {api_key}"

    # ------------------------------------------------------------ plumbing

    def _post(self, path, body, accept=None):
        headers = {"Accept": accept} if accept else {}
        r = self.http.post(self.url + path, data=json.dumps(_jsonable(body)), headers=headers,
                           timeout=self.timeout)
        if r.status_code >= 400:
            try:
                err = r.json()["error"]
            except Exception:
                raise StrataError(r.status_code, r.text)
            raise StrataError(r.status_code, err.get("message"), err.get("code"), err.get("param"))
        return r

    def _get(self, path):
        r = self.http.get(self.url + path, timeout=self.timeout)
        if r.status_code >= 400:
            err = r.json().get("error", {})
            raise StrataError(r.status_code, err.get("message"), err.get("code"), err.get("param"))
        return r.json()

    # ------------------------------------------------------------ discovery

    def hooks(self):
        """Every hook point: list of dicts (name, layer, layer_kind, shape, dtype, interveneable)."""
        return self._get("/v1/hooks")["data"]

    def model_info(self):
        return self._get("/v1/models")["data"][0]

    def tokenize(self, text, add_special=True):
        return self._post("/tokenize", {"content": text, "add_special": add_special}).json()["tokens"]

    def detokenize(self, ids):
        return self._post("/detokenize", {"tokens": list(map(int, ids))}).json()["content"]

    # ------------------------------------------------------------ activations

    def activations(self, prompt, hooks=(), positions="all", interventions=None, runs=None, session=None,
                    format="safetensors", commit=False):
        """POST /v1/activations. Returns (cache dict, info dict with input_ids, pieces).
        With runs=[...] (each {"prompt", "hooks", "positions", "interventions"}), returns
        a list of (cache, info), one per run."""
        body = {"format": format}
        if runs is not None:
            body["runs"] = runs
            if hooks:
                body["hooks"] = list(hooks)
            if positions != "all":
                body["positions"] = positions
        else:
            body.update({"prompt": prompt, "hooks": list(hooks), "positions": positions})
            if interventions:
                body["interventions"] = list(interventions)
        if session is not None:
            body["session"] = session
            body["commit"] = bool(commit)
        r = self._post("/v1/activations", body)
        if format == "json":
            return r.json()
        tensors, meta = parse_safetensors(r.content)
        n_runs = int(meta.get("runs", "1"))
        out = []
        for k in range(n_runs):
            prefix = f"runs.{k}." if n_runs > 1 else ""
            cache = {name[len(prefix):]: a for name, a in tensors.items()
                     if name.startswith(prefix) and name != prefix + "input_ids" and
                     (n_runs > 1 or not name.startswith("runs."))}
            info = {"input_ids": tensors[prefix + "input_ids"],
                    "pieces": json.loads(meta.get(prefix + "pieces", "[]")),
                    "positions": {name[len(prefix) + 10:]: json.loads(v) for name, v in meta.items()
                                  if name.startswith(prefix + "positions.")}}
            out.append((cache, info))
        return out if runs is not None else out[0]

    @staticmethod
    def _names(names_filter):
        if names_filter is None:
            return ["embed.hook_out", "blocks.*.hook_out", "ln_final.hook_out"]
        if isinstance(names_filter, str):
            return [names_filter]
        return list(names_filter)

    def run_with_cache(self, prompt, names_filter=None, positions="all", interventions=None):
        """Run the prompt and return (logits, cache): logits (positions, vocab) and a dict
        of numpy arrays keyed by hook name. names_filter: a name, a glob, or a list."""
        names = self._names(names_filter)
        cache, info = self.activations(prompt, ["logits"] + names, positions, interventions)
        logits = cache.pop("logits")
        if "logits" in names:
            cache["logits"] = logits
        return logits, cache

    def run_with_interventions(self, prompt, interventions, names_filter=("logits",), positions="all"):
        """Run with edits applied in order; returns (logits, cache) like run_with_cache."""
        return self.run_with_cache(prompt, names_filter, positions, interventions)

    def patch(self, clean, corrupted, hook, positions="all", names_filter=("logits",)):
        """Activation patching in one round trip: run `clean`, then `corrupted` with `hook`
        (a name or glob) set to the clean run's values. Returns (clean_cache, patched_cache)."""
        runs = [{"prompt": clean, "hooks": list(self._names(names_filter))},
                {"prompt": corrupted, "hooks": list(self._names(names_filter)),
                 "interventions": [{"hook": hook, "op": "patch", "source": 0, "positions": positions}]}]
        (a, _), (b, _) = self.activations(None, runs=runs)
        return a, b

    # ------------------------------------------------------------ generation

    def generate(self, prompt, interventions=None, max_tokens=32, temperature=0.0, hooks=None, **sampling):
        """/v1/completions with steering: interventions apply at every prefill and decode step.
        Returns the text, or (text, activations dict) when hooks are given."""
        body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": temperature, **sampling}
        if interventions:
            body["interventions"] = list(interventions)
        if hooks:
            body["activations"] = {"hooks": list(hooks)}
        resp = self._post("/v1/completions", body).json()
        text = resp["choices"][0]["text"]
        if not hooks:
            return text
        acts = {k: np.asarray(v["data"], dtype=np.int32 if v["dtype"] == "int32" else np.float32).reshape(v["shape"])
                for k, v in resp.get("activations", {}).items()}
        return text, acts

    def chat(self, messages, interventions=None, max_tokens=64, temperature=0.0, **sampling):
        body = {"messages": messages, "max_tokens": max_tokens, "temperature": temperature, **sampling}
        if interventions:
            body["interventions"] = list(interventions)
        return self._post("/v1/chat/completions", body).json()["choices"][0]["message"]["content"]

    # ------------------------------------------------------------ sessions

    def session(self, prompt=None, **fields):
        """Create a server-side session (POST /v1/sessions), optionally prefilled with a
        prompt (text or token ids). It keeps its state (KV + conv + SSM) on the server."""
        body = dict(fields)
        if prompt is not None:
            body["prompt"] = prompt
        return Session(self, self._post("/v1/sessions", body).json())

    def get_session(self, session_id):
        """GET /v1/sessions/{id}: n_tokens, state_bytes, checkpoints, busy."""
        return self._get(f"/v1/sessions/{session_id}")

    def fork(self, session_id):
        """POST /v1/sessions/{id}/fork: a new session with the same state (KV shared)."""
        return Session(self, self._post(f"/v1/sessions/{session_id}/fork", {}).json())

    def checkpoint(self, session_id):
        """POST /v1/sessions/{id}/checkpoints: snapshot now; returns {id, position, bytes}."""
        return self._post(f"/v1/sessions/{session_id}/checkpoints", {}).json()

    def rewind(self, session_id, position):
        """POST /v1/sessions/{id}/rewind: back to token `position` (the newest
        checkpoint at or before it is restored, the rest re-processed)."""
        return self._post(f"/v1/sessions/{session_id}/rewind", {"position": int(position)}).json()


class Session:
    """A server-side session handle."""

    def __init__(self, client, obj):
        self.client, self.obj = client, obj
        self.id = obj.get("id")

    def run_with_cache(self, prompt, names_filter=None, positions="all", commit=False):
        names = Client._names(names_filter)
        body = {"session": self.id, "prompt": prompt, "hooks": ["logits"] + names, "positions": positions,
                "commit": commit, "format": "safetensors"}
        tensors, _ = parse_safetensors(self.client._post("/v1/activations", body).content)
        return tensors.pop("logits"), tensors

    def fork(self):
        return self.client.fork(self.id)

    def info(self):
        return self.client.get_session(self.id)

    def checkpoint(self):
        return self.client.checkpoint(self.id)

    def rewind(self, position):
        return self.client.rewind(self.id, position)
