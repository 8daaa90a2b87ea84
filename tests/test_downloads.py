"""download_file against a local HTTP server on 127.0.0.1, and the offline mirror."""
import hashlib
import http.server
import threading

import pytest

from llmdefinitions.downloads import (DATASET_URL, TOKENIZER_URLS, DownloadError, download_file,
                                      find_in_mirror, mirror_candidates)

PAYLOAD = bytes(range(256)) * 2000          # 512,000 bytes


class FileServer:
    """Serves PAYLOAD with Range support; can cut the first connection after N bytes."""

    def __init__(self, cut_after=None, status=200):
        self.requests, self.ranges = [], []
        self.cut_after, self.status = cut_after, status
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append(self.path)
                if server.status != 200 or self.path.startswith("/missing"):
                    self.send_response(404 if self.path.startswith("/missing") else server.status)
                    self.end_headers()
                    return
                start = 0
                header = self.headers.get("Range")
                server.ranges.append(header)
                if header:
                    start = int(header.split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
                else:
                    self.send_response(200)
                body = PAYLOAD[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_after is not None:
                    cut, server.cut_after = server.cut_after, None
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.connection.shutdown(2)         # the connection drops mid-file
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server():
    servers = []

    def make(**kwargs):
        servers.append(FileServer(**kwargs))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


@pytest.fixture(autouse=True)
def no_mirror(monkeypatch):
    monkeypatch.delenv("LLMDEF_MIRROR", raising=False)


SHA = hashlib.sha256(PAYLOAD).hexdigest()


def test_downloads_with_progress_and_verifies(server, tmp_path, capsys):
    srv = server()
    path = download_file(f"{srv.url}/file.bin", tmp_path / "file.bin", sha256=SHA)
    assert path.read_bytes() == PAYLOAD
    assert not (tmp_path / "file.bin.part").exists()
    assert "file.bin" in capsys.readouterr().err            # tqdm progress bar on stderr


def test_existing_verified_file_makes_no_request(server, tmp_path):
    srv = server()
    (tmp_path / "f.bin").write_bytes(PAYLOAD)
    download_file(f"{srv.url}/f.bin", tmp_path / "f.bin", sha256=SHA)
    assert srv.requests == []


def test_resumes_after_a_cut_connection(server, tmp_path):
    srv = server(cut_after=100_000)
    path = download_file(f"{srv.url}/f.bin", tmp_path / "f.bin", sha256=SHA, backoff=0)
    assert path.read_bytes() == PAYLOAD
    assert len(srv.requests) == 2
    assert srv.ranges[1] == "bytes=100000-"                 # the second request resumed the .part


def test_resumes_a_part_file_left_by_an_earlier_run(server, tmp_path):
    srv = server()
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD[:300_000])
    download_file(f"{srv.url}/f.bin", tmp_path / "f.bin", sha256=SHA)
    assert srv.ranges == ["bytes=300000-"]
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_checksum_mismatch_raises_and_leaves_no_file(server, tmp_path):
    srv = server()
    with pytest.raises(DownloadError, match="corrompido"):
        download_file(f"{srv.url}/f.bin", tmp_path / "f.bin", sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_falls_back_to_the_backup_url(server, tmp_path):
    srv = server()
    download_file(f"{srv.url}/missing/f.bin", tmp_path / "f.bin", sha256=SHA,
                  backup_urls=[f"{srv.url}/backup/f.bin"], backoff=0)
    assert srv.requests == ["/missing/f.bin", "/backup/f.bin"]      # a 404 is not retried


def test_gives_up_with_a_message_naming_url_and_file(server, tmp_path):
    srv = server(status=500)
    with pytest.raises(DownloadError) as info:
        download_file(f"{srv.url}/f.bin", tmp_path / "f.bin", retries=2, backoff=0)
    message = str(info.value)
    assert f"{srv.url}/f.bin" in message and "f.bin" in message and "LLMDEF_MIRROR" in message
    assert len(srv.requests) == 2
    assert not (tmp_path / "f.bin").exists()


def test_unreachable_server_is_retried_then_reported(tmp_path):
    with pytest.raises(DownloadError, match="Não foi possível baixar"):
        download_file("http://127.0.0.1:9/f.bin", tmp_path / "f.bin", retries=2, backoff=0, timeout=2)


def test_mirror_hit_makes_no_request(server, tmp_path, monkeypatch):
    srv = server()
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "f.bin").write_bytes(PAYLOAD)
    monkeypatch.setenv("LLMDEF_MIRROR", str(mirror))
    download_file(f"{srv.url}/dir/f.bin", tmp_path / "out" / "f.bin", sha256=SHA)
    assert srv.requests == []
    assert (tmp_path / "out" / "f.bin").read_bytes() == PAYLOAD


def test_corrupted_mirror_file_is_reported(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "f.bin").write_bytes(b"wrong")
    monkeypatch.setenv("LLMDEF_MIRROR", str(mirror))
    with pytest.raises(DownloadError, match="espelho"):
        download_file("http://127.0.0.1:9/f.bin", tmp_path / "f.bin", sha256=SHA)
    assert not (tmp_path / "f.bin").exists()


def test_mirror_layout_reads_the_shared_data_folder(mirror, tmp_path):
    assert find_in_mirror(DATASET_URL) == mirror / "instruction-data.json"
    assert find_in_mirror(TOKENIZER_URLS["vocab.bpe"]) == mirror / "gpt2-tokenizer" / "vocab.bpe"
    model_encoder = "https://openaipublic.blob.core.windows.net/gpt-2/models/355M/encoder.json"
    assert find_in_mirror(model_encoder) == mirror / "gpt2-tokenizer" / "encoder.json"
    assert mirror_candidates("https://openaipublic.blob.core.windows.net/gpt-2/models/355M/model.ckpt.index")[0] \
        == "gpt2/355M/model.ckpt.index"
    assert mirror_candidates("https://huggingface.co/openai-community/gpt2/resolve/main/model.safetensors")[0] \
        == "hf/openai-community/gpt2/model.safetensors"
    path = download_file(DATASET_URL, tmp_path / "instruction-data.json")   # verified by the known sha256
    assert path.stat().st_size == (mirror / "instruction-data.json").stat().st_size


def test_unwritable_destination_is_explained(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DownloadError, match="Não foi possível criar a pasta"):
        download_file("http://127.0.0.1:9/f.bin", blocker / "sub" / "f.bin")
