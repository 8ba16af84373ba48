"""The loopback fake Hub speaks enough of the Hub API for the real huggingface_hub client (used by the Hub tests)."""

import subprocess
import sys
import textwrap


def run_python(code: str, env: dict, timeout: int = 120) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def test_upload_snapshot_and_card_round_trip(fake_hub, tmp_path):
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"a": 1}')
    (folder / "sub" / "weights.bin").write_bytes(bytes(range(256)) * 10)
    (folder / "README.md").write_text("---\nlibrary_name: ifsq-hf\ntags:\n- ifsq\n---\n# Card\n")
    out = run_python(
        f"""
        from huggingface_hub import HfApi, ModelCard, snapshot_download, hf_hub_download
        api = HfApi()
        api.create_repo("tester/demo", exist_ok=True)
        api.upload_folder(repo_id="tester/demo", folder_path={str(folder)!r})
        local = snapshot_download("tester/demo")
        import os
        print(sorted(os.path.relpath(os.path.join(d, f), local) for d, _, fs in os.walk(local) for f in fs))
        print(open(hf_hub_download("tester/demo", "sub/weights.bin"), "rb").read() == bytes(range(256)) * 10)
        card = ModelCard.load("tester/demo")
        print(card.data.library_name, card.data.tags)
        """,
        fake_hub.env(str(tmp_path / "home")),
    )
    assert "['README.md', 'config.json', 'sub/weights.bin']" in out
    assert "True" in out and "ifsq-hf ['ifsq']" in out
    assert fake_hub.files("tester/demo")["config.json"] == b'{"a": 1}'
