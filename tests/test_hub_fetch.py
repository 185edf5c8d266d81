"""Fetching a model by hub id: only what the rankers read, at one commit, and offline from the cache.

The Hugging Face hub cannot be reached here, so a loopback HTTP server speaks the part of its API that
``huggingface_hub`` uses (model info, the recursive tree, file resolution); surerank runs unchanged against
it through ``HF_ENDPOINT``, in a separate process as a user's would.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from http_support import send_json
from surerank.engine.checkpoint.locate import default_model_dir, hub_weight_files

pytest.importorskip("huggingface_hub")


class LoopbackHub:
    """Serves the files under ``root`` as the hub repository ``repo_id``; records every file downloaded."""

    def __init__(self, repo_id: str, root: Path):
        self.repo_id = repo_id
        self.files = {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}
        self.sha = hashlib.sha1(repo_id.encode()).hexdigest()
        self.downloaded: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _file(self, send_body: bool) -> None:
                prefix = f"/{hub.repo_id}/resolve/"
                path = unquote(urlparse(self.path).path)
                name = path[len(prefix):].partition("/")[2] if path.startswith(prefix) else ""
                if name not in hub.files:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.end_headers()
                    return
                data = hub.files[name].read_bytes()
                self.send_response(200)
                self.send_header("X-Repo-Commit", hub.sha)
                self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if send_body:
                    hub.downloaded.append(name)
                    self.wfile.write(data)

            def do_HEAD(self):
                self._file(send_body=False)

            def do_GET(self):
                path = urlparse(self.path).path
                if path.startswith(f"/api/models/{hub.repo_id}/tree/"):
                    send_json(self, [{"type": "file", "path": name, "size": p.stat().st_size,
                                 "oid": hashlib.sha1(p.read_bytes()).hexdigest()} for name, p in hub.files.items()])
                elif path.startswith(f"/api/models/{hub.repo_id}"):
                    send_json(self, {"id": hub.repo_id, "sha": hub.sha, "private": False,
                                "siblings": [{"rfilename": name} for name in hub.files]})
                else:
                    self._file(send_body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


RANK = """
import json, sys
import surerank
ranked = surerank.Reranker("embedding", model=sys.argv[1], precision="fp32").rank(
    "what is lift", ["lift is an upward force on a wing", "a cat sat on a mat", "drag opposes motion"])
print(json.dumps({"ids": ranked.ids, "scores": [float(s) for s in ranked.scores]}))
"""


def run_ranker(model: str, env: dict[str, str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", RANK, model], capture_output=True, text=True, env=env,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_hub_id_fetches_only_what_the_ranker_reads_and_then_works_offline(tmp_path):
    """A repository that carries its weights four times (safetensors, pytorch_model.bin, OpenVINO, ONNX):
    surerank downloads the small files and the safetensors, ranks exactly as from the local folder, and
    with HF_HUB_OFFLINE=1 ranks again from the cache without a request."""
    repo = tmp_path / "repo"
    shutil.copytree(default_model_dir(), repo)
    for extra in ("pytorch_model.bin", "openvino/openvino_model.bin", "onnx/model.onnx", "onnx/model_qint8.onnx",
                  "tf_model.h5"):
        (repo / extra).parent.mkdir(parents=True, exist_ok=True)
        (repo / extra).write_bytes(b"\0" * 4096)  # stand-ins: never to be fetched
    hub = LoopbackHub("acme/minilm-l6", repo)
    env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "hf-home"),
           "HF_HUB_DISABLE_PROGRESS_BARS": "1", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    env.pop("HF_HUB_OFFLINE", None)
    try:
        fetched = run_ranker("acme/minilm-l6", env)
        assert "model.safetensors" in hub.downloaded and "tokenizer.json" in hub.downloaded
        assert "1_Pooling/config.json" in hub.downloaded  # sentence-transformers' module folders come along
        assert not [f for f in hub.downloaded if f.endswith((".bin", ".onnx", ".h5"))], hub.downloaded
        local = run_ranker(str(default_model_dir()), env)
        assert fetched["ids"] == local["ids"] and fetched["scores"] == pytest.approx(local["scores"], abs=1e-6)

        before = list(hub.downloaded)
        offline = run_ranker("acme/minilm-l6", {**env, "HF_HUB_OFFLINE": "1"})
        assert offline == fetched and hub.downloaded == before
    finally:
        hub.close()


def _local(tmp_path: Path, files: dict[str, object]) -> Path:
    """The small files of a repository, as the first fetch step leaves them."""
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(json.dumps(content))
    return tmp_path


@pytest.mark.parametrize(("listing", "small", "expected"), [
    pytest.param(["config.json", "pytorch_model.bin", "onnx/model.onnx", "flax_model.msgpack"],
                 {"config.json": {"model_type": "bert"}}, ["pytorch_model.bin"], id="bin-only"),
    pytest.param(["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                  "model.safetensors.index.json", "pytorch_model-00001-of-00002.bin",
                  "pytorch_model-00002-of-00002.bin"],
                 {"config.json": {"model_type": "xlm-roberta"}},
                 ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"], id="sharded"),
    pytest.param(["modules.json", "0_Transformer/config.json", "0_Transformer/pytorch_model.bin",
                  "1_Pooling/config.json", "2_Dense/pytorch_model.bin"],
                 {"modules.json": [{"idx": 0, "name": "0", "path": "0_Transformer",
                                    "type": "sentence_transformers.models.Transformer"}],
                  "0_Transformer/config.json": {"model_type": "bert"}},
                 ["0_Transformer/pytorch_model.bin"], id="transformer-in-a-folder"),
    pytest.param(["config.json", "model.safetensors", "onnx/model.onnx", "onnx/model_quint8_avx2.onnx",
                  "openvino/openvino_model.bin"],
                 {"config.json": {"model_type": "electra"}}, ["model.safetensors", "onnx/model.onnx"],
                 id="exported-architecture-takes-its-shipped-onnx"),
    pytest.param(["config.json", "model.safetensors", "onnx/model.onnx", "onnx/model.onnx_data"],
                 {"config.json": {"model_type": "modernbert"}},
                 ["model.safetensors", "onnx/model.onnx", "onnx/model.onnx_data"], id="shipped-onnx-external-data"),
])
def test_weight_files_chosen_from_a_listing(tmp_path, listing, small, expected):
    assert hub_weight_files(listing, _local(tmp_path, small)) == expected
