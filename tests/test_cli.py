"""The `motif-video` console script, run as a user runs it."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from helpers import make_inputs, shared_form_reference
from motif_video.cli import main
from motif_video.data import world

SCRIPT = shutil.which("motif-video", path=str(Path(sys.executable).parent))


def run(*args: str) -> subprocess.CompletedProcess:
    assert SCRIPT is not None, "the motif-video console script is not installed beside this Python"
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=300)


def run_main(*args: str) -> subprocess.CompletedProcess:
    """The same command in this process (the CLI's `main`, its stdout and stderr captured): for tests
    of many commands, which would otherwise pay ~3 s of a new Python with torch and diffusers each.
    What only a new process shows (notices printed on import) is left to the tests that use `run`."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse's own errors
            code = e.code if isinstance(e.code, int) else 1
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def test_help_lists_every_subcommand():
    result = run("--help")
    assert result.returncode == 0
    for command in ("generate", "train", "prepare", "eval", "analyze", "serve", "info", "convert"):
        assert command in result.stdout


def test_help_prints_each_default_once_and_nothing_on_stderr():
    from motif_video.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name, command in commands.items():
        formatter = command._get_formatter()
        for action in command._actions:
            text = formatter._expand_help(action) if action.help else ""
            assert text.count("default") <= 1, f"{name} {action.option_strings}: {text}"
    result = run("eval", "--help")
    assert result.returncode == 0 and result.stderr == ""
    assert "prompts per split (and per caption form) (default: 8)" in " ".join(result.stdout.split())
    for command in ("eval", "analyze", "generate", "serve", "curriculum"):  # every command that runs a model
        assert "--device" in commands[command].format_help() and "--dtype" in commands[command].format_help()
    top = run("--help")
    assert top.stderr == "" and "not built yet" not in top.stdout


def test_serve_refuses_bad_options_before_loading():
    result = run("serve", "--port", "70000")
    assert result.returncode == 2
    assert result.stderr.strip() == "motif-video serve: error: --port must be between 1 and 65535, got 70000"


def test_info_reports_the_2b_parameter_count():
    result = run("info", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert 1.8e9 <= report["parameters"] <= 2.0e9
    assert sum(report["parameters_by_stage"].values()) == report["parameters"]
    assert report["config"]["num_decoder_blocks"] == 8


def test_bad_input_is_one_clear_line_and_exit_2(tmp_path):
    result = run("info", "--preset", "nope")
    assert result.returncode == 2
    assert "unknown transformer preset 'nope'" in result.stderr and "Traceback" not in result.stderr
    result = run("convert", str(tmp_path / "missing"), str(tmp_path / "out"))
    assert result.returncode == 2 and "no transformer checkpoint at" in result.stderr
    assert "Traceback" not in result.stderr


def test_convert_original_single_file_to_diffusers_directory(tmp_path):
    from motif_video import load_transformer

    reference, original = shared_form_reference()
    save_file(original, str(tmp_path / "motif.safetensors"))
    result = run("convert", str(tmp_path / "motif.safetensors"), str(tmp_path / "out"), "--preset", "debug")
    assert result.returncode == 0, result.stderr
    assert "kv=shared" in result.stdout
    converted = load_transformer(tmp_path / "out")
    inputs = make_inputs()
    with torch.no_grad():
        torch.testing.assert_close(converted(**inputs).velocity, reference(**inputs).sample, rtol=1e-5, atol=1e-5)
    info = run("info", "--weights", str(tmp_path / "out"), "--json")
    assert json.loads(info.stdout)["parameters"] == converted.num_parameters()


def test_train_rejects_bad_config_in_one_line(tmp_path):
    result = run("train", str(tmp_path / "missing.toml"))
    assert result.returncode == 2 and "config file" in result.stderr and "does not exist" in result.stderr
    config = Path(__file__).resolve().parents[1] / "configs" / "debug.toml"
    result = run("train", str(config), "optim.lrr=3")
    assert result.returncode == 2 and "unknown config keys ['optim.lrr']" in result.stderr
    assert "Traceback" not in result.stderr


def test_prepare_shapes_through_the_console_script(tmp_path):
    result = run("prepare", "shapes:3", str(tmp_path / "out"), "--frame-buckets", "9", "--area", "1536", "--quiet")
    assert result.returncode == 0, result.stderr
    assert (
        "clips: 3 from 3 sources" in result.stdout and "buckets (frames x height x width): 9x32x32: 3" in result.stdout
    )
    assert (tmp_path / "out" / "metadata.jsonl").read_text().count("\n") == 3
    bad = run("prepare", "shapes:3", str(tmp_path / "x"), "--frame-buckets", "10")
    assert bad.returncode == 2 and "4k+1 frame counts" in bad.stderr
    missing = run("prepare", str(tmp_path / "nowhere"), str(tmp_path / "y"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    one = ["--frame-buckets", "9", "--area", "1536", "--max-objects", "1", "--quiet"]
    single = run("prepare", "shapes:12", str(tmp_path / "one"), *one)
    assert single.returncode == 0, single.stderr
    captions = [json.loads(line)["caption"] for line in (tmp_path / "one" / "metadata.jsonl").read_text().splitlines()]
    assert sorted(captions) == sorted(world.scene(0, i, max_objects=1).caption for i in range(12))
    assert not any(" and " in c for c in captions) and any(" and " in world.scene(0, i).caption for i in range(12))
    zero = run("prepare", "shapes:3", str(tmp_path / "z"), "--max-objects", "0")
    assert zero.returncode == 2 and "--max-objects >= 1" in zero.stderr and "Traceback" not in zero.stderr
    free = run("prepare", "shapes:3", str(tmp_path / "f"), "--free-layout", "1.5")
    assert free.returncode == 2 and "--free-layout must be a share in [0, 1], got 1.5" in free.stderr
    jitter = run("prepare", "shapes:3", str(tmp_path / "j"), "--jitter", "-1")
    assert jitter.returncode == 2 and "--jitter must be a scale in [0, 1], got -1.0" in jitter.stderr


def test_every_bad_weights_file_is_one_line_naming_it(tmp_path):
    """Truncated, random-bytes, pickle-only and invalid-JSON files: exit 2, one line naming the file, no output."""
    import os

    from motif_video.random_weights import build_random_pipeline

    base = tmp_path / "base"
    build_random_pipeline(base)

    def broken(name: str, change) -> Path:
        folder = tmp_path / name
        shutil.copytree(base, folder)
        change(folder)
        return folder

    def truncate(file: Path) -> None:
        file.write_bytes(file.read_bytes()[: file.stat().st_size * 9 // 10])

    cases = {
        "truncated transformer": (
            broken("t", lambda d: truncate(d / "transformer/diffusion_pytorch_model.safetensors")),
            "transformer/diffusion_pytorch_model.safetensors is not a complete safetensors file",
        ),
        "random-bytes VAE": (
            broken("v", lambda d: (d / "vae/diffusion_pytorch_model.safetensors").write_bytes(os.urandom(4096))),
            "vae/diffusion_pytorch_model.safetensors is not a complete safetensors file",
        ),
        ".bin-only text encoder": (
            broken(
                "b",
                lambda d: (
                    (d / "text_encoder/model.safetensors").unlink(),
                    torch.save({"w": torch.zeros(1)}, d / "text_encoder/pytorch_model.bin"),
                ),
            ),
            "text_encoder has only pickle weights (pytorch_model.bin)",
        ),
        "invalid JSON": (
            broken("j", lambda d: (d / "vae/config.json").write_text("{\n")),
            "vae/config.json is not valid JSON",
        ),
    }
    for case, (folder, message) in cases.items():
        out = tmp_path / f"{folder.name}.mp4"
        result = run("generate", "a red circle moves up", "--weights", str(folder), "--out", str(out), "--steps", "1")
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, (case, result.stderr)
        assert message in lines[0] and str(folder) in lines[0], case
        assert not out.exists() and not list(tmp_path.glob(f".{folder.name}*")), case
    single = tmp_path / "single.safetensors"
    single.write_bytes(os.urandom(1000))
    result = run("convert", str(single), str(tmp_path / "converted"))
    assert result.returncode == 2 and f"{single} is not a complete safetensors file" in result.stderr
    assert not (tmp_path / "converted").exists()


def test_a_pickle_payload_in_checkpoint_metadata_is_refused_and_runs_nothing(tmp_path):
    import pickle

    config = Path(__file__).resolve().parents[1] / "configs" / "debug.toml"
    run_dir = tmp_path / "run"
    first = run(
        "train", str(config), "train.steps=2", "train.save_every=2", f"train.out_dir={json.dumps(str(run_dir))}"
    )
    assert first.returncode == 0, first.stderr
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    import os

    (run_dir / "step-0000002" / ".metadata").write_bytes(pickle.dumps(Payload()))
    resumed = run(
        "train", str(config), "train.steps=4", "train.save_every=2", f"train.out_dir={json.dumps(str(run_dir))}"
    )
    assert resumed.returncode == 2 and "Traceback" not in resumed.stderr
    assert "names posix.system" in resumed.stderr and "refused" in resumed.stderr
    assert not marker.exists()  # nothing ran


CTRL_C_WHILE_TORCH_LOADS = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # as at a terminal, also when run from a background job
class CtrlC:  # the user presses Ctrl-C as torch starts to load
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None
sys.meta_path.insert(0, CtrlC())
from motif_video.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_ctrl_c_while_the_libraries_load_is_one_line_and_exit_130():
    light = subprocess.run(
        [sys.executable, "-c", "import sys, motif_video.cli; print(sorted(m for m in sys.modules if m == 'torch'))"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert light.stdout.strip() == "[]", light  # the entry point itself loads no torch: its handler is in place first
    result = subprocess.run(
        [sys.executable, "-c", CTRL_C_WHILE_TORCH_LOADS, "train", "configs/shapes-tiny.toml"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 130, result.stderr
    # torch loads once the command runs (parsing needs none): the command's own one-line interrupt message
    assert result.stderr.startswith("motif-video train: interrupted; ") and result.stderr.count("\n") == 1, (
        result.stderr
    )


HELP_OF_EVERY_COMMAND = """
import contextlib, io, sys
from motif_video.cli import build_parser, main
commands = [None, *build_parser()._subparsers._group_actions[0].choices]
for command in commands:
    with contextlib.redirect_stdout(io.StringIO()) as text, contextlib.suppress(SystemExit):
        main(["--help"] if command is None else [command, "--help"])
    assert "usage: motif-video" in text.getvalue(), (command, text.getvalue())
print(len(commands), sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "numpy", "diffusers")))
"""


def test_help_loads_no_torch_and_generate_prints_only_progress_on_stderr(tmp_path):
    # --help of every command answers from the parser alone: torch (seconds to load) stays unloaded
    result = subprocess.run([sys.executable, "-c", HELP_OF_EVERY_COMMAND], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    count, loaded = result.stdout.split(" ", 1)
    assert int(count) > 15 and loaded.strip() == "[]", result.stdout

    out = tmp_path / "demo.mp4"
    result = run("generate", "a red circle moves to the left on a gray background", "--out", str(out))
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.replace("\r", "\n").splitlines() if line.strip()]
    assert lines and all(line.startswith(("denoising", "decoding")) and "|" in line for line in lines), lines
