"""A researcher's first hour: checkpoints as people save them, `--input-shape`, and user
architectures imported from the folder canon runs in.

Everything runs on real files in ``tmp_path``: the CLI in-process through ``CliRunner``,
and a second ``canon`` process where the recorded input shape must carry over.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from safetensors.torch import save_file

from canon.architectures import build_model
from canon.cli import cli
from canon.errors import CheckpointFormatError, SpecMismatchError
from canon.zoo import Zoo

CONFIG = {"in_features": 6, "hidden": [5], "classes": 3}
CONFIG_JSON = json.dumps(CONFIG)
MLP = ("--arch", "mlp", "--config", CONFIG_JSON)
CONV_MODULE = "first_hour_nets"  # the user module, written into a tmp folder per test
CONV = ("--arch", f"{CONV_MODULE}:make_net")
CONV_SOURCE = """
from pathlib import Path

from torch import nn

# every import leaves a line here, so a test can tell whether canon imported the module
with open(Path(__file__).with_name("imports.log"), "a") as log:
    log.write("imported\\n")


def make_net(width=4):
    \"\"\"A conv net with no `input_shape` attribute and no first nn.Linear.\"\"\"
    return nn.Sequential(
        nn.Conv2d(1, width, 3), nn.ReLU(), nn.Flatten(), nn.Linear(width * 6 * 6, 3)
    )
"""


# -- helpers -------------------------------------------------------------------------------


def run(zoo: Path, *args: str, code: int = 0) -> Result:
    """``canon ARGS --zoo ZOO`` in-process; the exit code must be ``code``."""
    result = CliRunner().invoke(cli, [*args, "--zoo", str(zoo), "--device", "cpu"])
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    return result


def add(zoo: Path, file: str | Path, name: str, *options: str, code: int = 0) -> Result:
    """``canon add FILE --name NAME OPTIONS``."""
    return run(zoo, "add", str(file), "--name", name, *options, code=code)


def init(zoo: Path) -> Path:
    run(zoo, "init")
    return zoo


def entry(zoo: Path, name: str) -> dict[str, object]:
    """The entry as ``canon show --json`` prints it."""
    shown: dict[str, object] = json.loads(run(zoo, "show", name, "--json").stdout)
    return shown


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file of the zoo (SQLite's transient -wal/-shm aside)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(("-wal", "-shm"))
    }


def mlp_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in build_model("mlp", CONFIG).state_dict().items()}


def user_state(
    folder: Path, seed: int = 0, module: str = CONV_MODULE, function: str = "make_net"
) -> dict[str, torch.Tensor]:
    """The state dict of a user module's network (imported here, outside canon)."""
    sys.path.insert(0, str(folder))
    try:
        made = getattr(__import__(module), function)
        torch.manual_seed(seed)
        return dict(made().state_dict())
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop(module, None)


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def nets_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder holding the user module, made the current folder; the module is forgotten
    afterwards, so that each test imports it afresh (or not at all)."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / f"{CONV_MODULE}.py").write_text(CONV_SOURCE)
    monkeypatch.chdir(folder)
    monkeypatch.delenv("CANON_TRUST_CODE", raising=False)
    sys.modules.pop(CONV_MODULE, None)
    yield folder
    sys.modules.pop(CONV_MODULE, None)


def imports(folder: Path) -> int:
    log = folder / "imports.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def canon_process(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A second process: the installed ``canon`` script, run in ``folder`` (the script's own
    folder is first on its path, not ``folder``, so a user module there is found only as
    canon looks for it), else ``python -m canon``."""
    script = Path(sys.executable).with_name("canon")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "canon"]
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CANON_TRUST_CODE", "CANON_ZOO", "PYTHONPATH")
    }
    return subprocess.run(
        [*command, *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


# -- checkpoints as people save them -------------------------------------------------------


LAYOUTS = {
    # name: (file name, what to save, extra options, the log line canon must print)
    "plain-pt": ("net.pt", lambda s: s, (), None),
    "model-and-epoch": (
        "net.pt",
        lambda s: {"model": s, "epoch": 7, "optimizer": {"state": {}, "param_groups": []}},
        (),
        "read the state dict under 'model'",
    ),
    "lightning": (
        "net.ckpt",
        lambda s: {
            "state_dict": {f"model.{k}": v for k, v in s.items()},
            "epoch": 3,
            "global_step": 120,
            "hyper_parameters": {"lr": 0.1},
        },
        (),
        "read the state dict under 'state_dict', prefix 'model.' stripped",
    ),
    "model-state-dict": (
        "net.pth",
        lambda s: {"model_state_dict": s, "optimizer_state_dict": {}, "loss": 0.25},
        (),
        "read the state dict under 'model_state_dict'",
    ),
    "ddp-prefix": (
        "net.pt",
        lambda s: {f"module.{k}": v for k, v in s.items()},
        (),
        "read the state dict, prefix 'module.' stripped",
    ),
    "ddp-in-a-dict": (
        "net.pth",
        lambda s: {"model_state_dict": {f"module.{k}": v for k, v in s.items()}, "epoch": 1},
        (),
        "read the state dict under 'model_state_dict', prefix 'module.' stripped",
    ),
    "compiled-in-ddp": (
        "net.pt",
        lambda s: {f"module._orig_mod.{k}": v for k, v in s.items()},
        (),
        "read the state dict, prefix 'module._orig_mod.' stripped",
    ),
    "explicit-key": (
        "net.pt",
        lambda s: {"ema": s, "student": {k: v + 1 for k, v in s.items()}},
        ("--key", "ema"),
        "read the state dict under 'ema'",
    ),
    "safetensors-ddp-prefix": (
        "net.safetensors",
        lambda s: {f"module.{k}": v for k, v in s.items()},
        (),
        "read the state dict, prefix 'module.' stripped",
    ),
    "safetensors-lightning": (
        "net.safetensors",
        lambda s: {f"model.{k}": v for k, v in s.items()},
        (),
        "read the state dict, prefix 'model.' stripped",
    ),
    "safetensors-with-optimizer": (
        "net.safetensors",
        lambda s: {
            **{f"state_dict.{k}": v for k, v in s.items()},
            "optimizer.momentum": torch.zeros(4),
        },
        (),
        "read the state dict under 'state_dict'",
    ),
    "safetensors-explicit-key": (
        "net.safetensors",
        lambda s: {
            **{f"ema.{k}": v for k, v in s.items()},
            **{f"student.{k}": v + 1 for k, v in s.items()},
        },
        ("--key", "ema"),
        "read the state dict under 'ema'",
    ),
}


def _save(path: Path, obj: object) -> None:
    if path.suffix == ".safetensors":
        assert isinstance(obj, dict)
        save_file({k: v.contiguous() for k, v in obj.items()}, str(path))
    else:
        torch.save(obj, path)


@pytest.fixture(scope="module")
def plain_entry(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The entry a plain safetensors state dict makes: what every layout must give."""
    root = tmp_path_factory.mktemp("plain")
    zoo = init(root / "zoo")
    path = root / "plain.safetensors"
    save_file(mlp_state(), str(path))
    add(zoo, path, "net", *MLP)
    return entry(zoo, "net")


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_checkpoint_layouts_give_the_plain_entry(
    layout: str, tmp_path: Path, plain_entry: dict[str, object]
) -> None:
    """Each way people save a checkpoint adds the same entry (same object id, so the same
    bytes) as the plain state dict, and the command says which key and prefix it used."""
    file_name, wrap, extra, said = LAYOUTS[layout]
    path = tmp_path / file_name
    _save(path, wrap(mlp_state()))
    zoo = init(tmp_path / "zoo")
    result = add(zoo, path, "net", *MLP, *extra)
    shown = entry(zoo, "net")
    assert shown["id"] == plain_entry["id"] and shown["family"] == plain_entry["family"]
    assert shown["config"] == plain_entry["config"]
    with Zoo.open(zoo) as opened:
        assert same(opened.state("net"), mlp_state())
    notes = [line for line in result.stderr.splitlines() if "read the state dict" in line]
    if said is None:
        assert notes == []
    else:
        assert len(notes) == 1 and notes[0].endswith(said), result.stderr
        assert str(path) in notes[0]


def test_a_checkpoint_dict_without_a_usual_key_asks_for_key(tmp_path: Path) -> None:
    """A dict whose state dict sits under an unusual key is refused with the way out
    (--key), names the keys it holds, and leaves the zoo unchanged; a wrong --key says
    which keys hold tensors."""
    zoo = init(tmp_path / "zoo")
    path = tmp_path / "net.pt"
    torch.save({"ema": mlp_state(), "step": 10}, path)
    before = snapshot(zoo)
    result = add(zoo, path, "net", *MLP, code=1)
    assert "--key NAME" in result.stderr and "'ema'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = add(zoo, path, "net", *MLP, "--key", "teacher", code=1)
    assert "no tensors under the key 'teacher'" in result.stderr and "'ema'" in result.stderr
    assert snapshot(zoo) == before
    add(zoo, path, "net", *MLP, "--key", "ema")
    with Zoo.open(zoo) as opened:
        assert same(opened.state("net"), mlp_state())


def test_a_prefix_is_kept_when_the_names_do_not_match(tmp_path: Path) -> None:
    """Prefixes are stripped only when the architecture's names then match: the state dict
    of another architecture is reported tensor by tensor, names as they are."""
    path = tmp_path / "net.pt"
    torch.save({f"module.{k}": v for k, v in mlp_state().items()}, path)
    other = {**CONFIG, "hidden": [5, 5]}
    with Zoo.open(tmp_path / "zoo") as zoo, pytest.raises(SpecMismatchError) as caught:
        zoo.add(path, name="net", architecture="mlp", config=other)
    assert "unexpected tensor `module.fc1.weight`" in caught.value.problems
    assert "missing tensor `fc2.weight` (shape [5, 5])" in caught.value.problems


class _Marker(torch.nn.Module):
    """A module whose unpickling would leave a file (see ``__setstate__``)."""

    marker: Path | None = None

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(6, 3)

    def __setstate__(self, state: dict[str, object]) -> None:
        super().__setstate__(state)
        if _Marker.marker is not None:
            _Marker.marker.touch()


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_a_pickled_module_is_refused_with_the_how_to(tmp_path: Path, legacy: bool) -> None:
    """`torch.save(model)` is refused in one line that says how to save a state dict; it is
    never unpickled, and the zoo is byte-for-byte as it was."""
    zoo = init(tmp_path / "zoo")
    add(zoo, _plain_file(tmp_path), "first", *MLP)
    marker = tmp_path / "UNPICKLED"
    _Marker.marker = marker
    try:
        for name, model in (("sequential", build_model("mlp", CONFIG)), ("custom", _Marker())):
            path = tmp_path / f"{name}.pt"
            torch.save(model, path, _use_new_zipfile_serialization=not legacy)
            before = snapshot(zoo)
            result = add(zoo, path, "net", *MLP, code=1)
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
            assert "torch.save(model.state_dict(), path)" in lines[0]
            assert "never unpickles" in lines[0] and "whole module" in lines[0]
            assert snapshot(zoo) == before
            assert not marker.exists()
        # control: a full unpickle would have run __setstate__, so the check above means it
        torch.load(tmp_path / "custom.pt", weights_only=False)
        assert marker.exists()
    finally:
        _Marker.marker = None


def _plain_file(tmp_path: Path) -> str:
    path = tmp_path / "plain.pt"
    torch.save(mlp_state(1), path)
    return str(path)


# -- --input-shape -------------------------------------------------------------------------


@pytest.mark.slow
def test_input_shape_is_recorded_and_used_by_a_second_process(
    nets_folder: Path, tmp_path: Path
) -> None:
    """A conv net without `input_shape` adds with --input-shape (its module imported from the
    current folder); the shape is recorded in the config, and a second process traces the
    entry alike: with --trust-code it compares two entries, without it nothing is imported."""
    zoo = init(nets_folder / "zoo")
    data = _image_npz(tmp_path)
    for seed in (0, 1):
        path = nets_folder / f"seed{seed}.pt"
        torch.save({"model": user_state(nets_folder, seed), "epoch": 9}, path)
    path_before = list(sys.path)
    result = add(zoo, "seed0.pt", "a", *CONV, "--input-shape", "1,8,8", "--dataset", data)
    assert sys.path == path_before  # the current folder was on the path for the import only
    assert "read the state dict under 'model'" in result.stderr
    add(zoo, "seed1.pt", "b", *CONV, "--input-shape", "[1, 8, 8]", "--dataset", data)
    a, b = entry(zoo, "a"), entry(zoo, "b")
    assert a["config"] == {"input_shape": [1, 8, 8]} and a["family"] == b["family"]
    with Zoo.open(zoo, trust_code=True) as opened:
        assert [g.size for g in opened.spec("a").groups] == [4]
        assert same(opened.state("a"), user_state(nets_folder, 0))
    # the zoo's entries name code: a process that is not trusted imports nothing
    seen = imports(nets_folder)
    refused = canon_process(nets_folder, "compare", "a", "b", "--zoo", "zoo")
    assert refused.returncode == 1 and "--trust-code" in refused.stderr
    assert imports(nets_folder) == seen
    options = ("--path", "linear_aligned", "--points", "3", "--json", "--device", "cpu")
    compared = canon_process(
        nets_folder, "compare", "b", "a", "--zoo", "zoo", "--trust-code", *options
    )
    assert compared.returncode == 0, compared.stderr
    assert imports(nets_folder) == seen + 1
    assert json.loads(compared.stdout)


def _image_npz(folder: Path, n: int = 40) -> str:
    """An image dataset: x of shape (n, 1, 8, 8) and labels 0..2, as `npz:PATH`."""
    rng = np.random.default_rng(0)
    path = folder / "images.npz"
    x = rng.normal(size=(n, 1, 8, 8)).astype(np.float32)
    np.savez(path, x=x, y=np.arange(n) % 3)
    return f"npz:{path}"


def test_input_shape_is_taken_from_the_dataset(nets_folder: Path, tmp_path: Path) -> None:
    """Without --input-shape the dataset's sample shape is used, said, recorded, and the
    network is evaluated on it; without either, the error says to pass --input-shape."""
    zoo = init(nets_folder / "zoo")
    torch.save(user_state(nets_folder), nets_folder / "net.pt")
    before = snapshot(zoo)
    result = add(zoo, "net.pt", "a", *CONV, code=1)
    assert "pass --input-shape" in result.stderr and "no dataset" in result.stderr
    result = add(zoo, "net.pt", "a", *CONV, "--dataset", "nowhere", code=1)
    assert "pass --input-shape" in result.stderr and "does not load here" in result.stderr
    # a long reason (a known dataset that needs a path) does not crowd out what to do
    result = add(zoo, "net.pt", "a", *CONV, "--dataset", "cifar10", code=1)
    assert "such as --input-shape 3,32,32 (Python: input_shape=(3, 32, 32))" in result.stderr
    result = add(zoo, "net.pt", "a", *CONV, "--dataset", "digits", code=1)
    assert "[64]" in result.stderr and "pass --input-shape" in result.stderr
    assert "Traceback" not in result.stderr and "conv2d" in result.stderr
    assert snapshot(zoo) == before
    data = _image_npz(tmp_path)
    result = add(zoo, "net.pt", "a", *CONV, "--dataset", data)
    assert "input shape [1, 8, 8] taken from dataset" in result.stderr
    shown = entry(zoo, "a")
    assert shown["config"] == {"input_shape": [1, 8, 8]}
    assert shown["dataset"].startswith(data + "#sha256=")  # pinned to the file's content
    metrics = shown["metrics"]
    assert isinstance(metrics, dict) and 0 <= metrics["train_error"] <= 1


def test_input_shape_is_not_recorded_when_the_network_tells_it(
    nets_folder: Path, tmp_path: Path
) -> None:
    """A network that tells its own input shape keeps the family it always had: a matching
    --input-shape changes nothing, and a registered architecture refuses another shape."""
    (nets_folder / "first_hour_mlp.py").write_text(
        "from torch import nn\n\n"
        "def make(width=5):\n"
        "    return nn.Sequential(nn.Linear(6, width), nn.ReLU(), nn.Linear(width, 3))\n"
    )
    zoo = init(nets_folder / "zoo")
    torch.save(user_state(nets_folder, 0, "first_hour_mlp", "make"), tmp_path / "seq.pt")
    torch.save(user_state(nets_folder, 1, "first_hour_mlp", "make"), tmp_path / "seq1.pt")
    arch = ("--arch", "first_hour_mlp:make")
    try:
        add(zoo, tmp_path / "seq.pt", "s", *arch)
        add(zoo, tmp_path / "seq1.pt", "s1", *arch, "--input-shape", "6")
    finally:
        sys.modules.pop("first_hour_mlp", None)
    assert entry(zoo, "s1")["config"] == {} == entry(zoo, "s")["config"]
    assert entry(zoo, "s1")["family"] == entry(zoo, "s")["family"]
    path = _plain_file(tmp_path)
    add(zoo, path, "m", *MLP, "--input-shape", "6")
    result = add(zoo, path, "m2", *MLP, "--input-shape", "1,6", code=1)
    assert "registered architecture" in result.stderr


@pytest.mark.parametrize(
    "text",
    ["0,8,8", "1,2,3,4,5", "5000", "a,b", "[1, 2.5]", "4,4096,4096", "[]", "1,,", "true"],
)
def test_bad_input_shapes_are_refused(nets_folder: Path, text: str) -> None:
    """--input-shape takes 1 to 4 integers from 1 to 4096, 2**22 numbers at most: anything
    else is one line naming --input-shape, with the zoo unchanged."""
    zoo = init(nets_folder / "zoo")
    torch.save(user_state(nets_folder), nets_folder / "net.pt")
    before = snapshot(zoo)
    result = add(zoo, "net.pt", "n", *CONV, "--input-shape", text, code=1)
    assert "--input-shape" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert snapshot(zoo) == before


# -- user modules from the current folder --------------------------------------------------


def test_a_user_module_in_the_current_folder_is_imported(
    nets_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--arch module:function` finds module.py in the current folder as `python -m` does;
    from another folder the error says what to do, and nothing is imported."""
    path = tmp_path / "net.pt"
    torch.save(user_state(nets_folder), path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    zoo = init(elsewhere / "zoo")
    seen = imports(nets_folder)
    monkeypatch.chdir(elsewhere)
    result = add(zoo, path, "a", *CONV, "--input-shape", "1,8,8", code=1)
    message = result.stderr
    assert f"cannot import module `{CONV_MODULE}`" in message
    assert f"run canon from the folder that holds {CONV_MODULE}.py" in message
    assert "PYTHONPATH" in message and str(elsewhere) in message
    assert imports(nets_folder) == seen and CONV_MODULE not in sys.modules
    monkeypatch.chdir(nets_folder)
    path_before = list(sys.path)
    add(zoo, path, "a", *CONV, "--input-shape", "1,8,8")
    assert imports(nets_folder) == seen + 1 and sys.path == path_before


def test_a_missing_dependency_of_a_user_module_is_named(nets_folder: Path, tmp_path: Path) -> None:
    """When the module is found but something it imports is not, the error names that."""
    (nets_folder / "first_hour_broken.py").write_text("import no_such_dependency_xyz\n")
    zoo = init(tmp_path / "zoo")
    result = add(zoo, _plain_file(tmp_path), "a", "--arch", "first_hour_broken:make", code=1)
    assert "no_such_dependency_xyz" in result.stderr
    assert "run canon from the folder" not in result.stderr
    sys.modules.pop("first_hour_broken", None)


def test_a_user_module_from_a_file_needs_trust(nets_folder: Path) -> None:
    """The current folder changes where a module is found, not whether it may be: a file
    whose metadata names code is refused without --trust-code, before anything is imported,
    and with it adds as the same entry (its recorded input shape included)."""
    zoo = init(nets_folder / "zoo")
    torch.save(user_state(nets_folder), nets_folder / "net.pt")
    add(zoo, "net.pt", "a", *CONV, "--input-shape", "1,8,8")
    shown = entry(zoo, "a")
    with Zoo.open(zoo) as opened:
        shutil.copy(opened.objects.path(str(shown["id"])), nets_folder / "copy.safetensors")
    sys.modules.pop(CONV_MODULE, None)
    seen = imports(nets_folder)
    other = init(nets_folder / "other")
    result = add(other, "copy.safetensors", "c", code=1)
    assert "--trust-code" in result.stderr and imports(nets_folder) == seen
    add(other, "copy.safetensors", "c", "--trust-code")
    copied = entry(other, "c")
    assert copied["id"] == shown["id"] and copied["config"] == {"input_shape": [1, 8, 8]}
    assert imports(nets_folder) == seen + 1


def test_entries_without_a_dataset_are_told_how_to_name_one(tmp_path: Path) -> None:
    """Checkpoints added without --dataset compare only once their dataset is named: the
    error says how (`canon edit NAME --dataset D`), and that command makes it work."""
    zoo = init(tmp_path / "zoo")
    for seed, name in ((0, "a"), (1, "b")):
        save_file(mlp_state(seed), tmp_path / f"{name}.safetensors")
        add(zoo, tmp_path / f"{name}.safetensors", name, *MLP)
    before = snapshot(zoo)
    refused = run(zoo, "compare", "a", "b", "--points", "3", code=1)
    assert "entry `a` has no dataset" in refused.stderr
    assert "`canon edit a --dataset NAME`" in refused.stderr
    table = run(zoo, "table", "--points", "3", code=1)
    assert "`canon edit a --dataset NAME`" in table.stderr
    assert snapshot(zoo) == before
    distances = json.loads(run(zoo, "table", "--metric", "geodesic", "--json").stdout)
    assert distances["matrix"][0][1] > 0  # distances need no data
    data = tmp_path / "rows.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.normal(size=(30, 6)).astype(np.float32), y=np.arange(30) % 3)
    for name in ("a", "b"):
        run(zoo, "edit", name, "--dataset", f"npz:{data}")
    compared = run(zoo, "compare", "a", "b", "--points", "3", "--path", "linear", "--json")
    assert json.loads(compared.stdout)


def test_several_checkpoints_add_as_one(tmp_path: Path) -> None:
    """`canon add runs/*/model.pt`: one entry a file, named after its folder where the
    files' names repeat, each evaluated; then the same files again and a list whose last
    file does not fit the architecture are refused whole, the zoo unchanged."""
    zoo = init(tmp_path / "zoo")
    files = []
    for seed in range(3):
        folder = tmp_path / "runs" / f"seed{seed}"
        folder.mkdir(parents=True)
        torch.save(mlp_state(seed), folder / "model.pt")
        files.append(str(folder / "model.pt"))
    data = tmp_path / "rows.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.normal(size=(30, 6)).astype(np.float32), y=np.arange(30) % 3)
    added = run(zoo, "add", *files, *MLP, "--dataset", f"npz:{data}", "--tag", "sweep=1", "--json")
    entries = json.loads(added.stdout)["entries"]
    assert [e["name"] for e in entries] == ["seed0", "seed1", "seed2"]
    assert all(e["tags"] == {"sweep": "1"} and "train_error" in e["metrics"] for e in entries)
    with Zoo.open(zoo) as opened:
        assert all(same(opened.state(f"seed{s}"), mlp_state(s)) for s in range(3))
    before = snapshot(zoo)
    again = run(zoo, "add", *files, *MLP, code=1)  # the names are taken: nothing is read
    assert "an entry named `seed0` already exists" in again.stderr
    wide = {"in_features": 6, "hidden": [7], "classes": 3}
    save_file(build_model("mlp", wide).state_dict(), tmp_path / "wide.safetensors")
    for seed in (3, 4):
        save_file(mlp_state(seed), tmp_path / f"more{seed}.safetensors")
    more = [str(tmp_path / f"more{s}.safetensors") for s in (3, 4)]
    refused = run(zoo, "add", *more, str(tmp_path / "wide.safetensors"), *MLP, code=1)
    assert "wide.safetensors" in refused.stderr
    assert snapshot(zoo) == before  # neither more3 nor more4 was added
    named = run(zoo, "add", *more, "--name", "x", *MLP, code=1)
    assert "`--name` names one entry" in named.stderr
    pinned = run(zoo, "add", *more, "--sha256", "0" * 64, *MLP, code=1)
    assert "applies to one hf:// model or model folder at a time" in pinned.stderr
    folder = run(zoo, "add", more[0], str(tmp_path / "runs"), *MLP, code=1)
    assert "which add one at a time" in folder.stderr
    assert snapshot(zoo) == before


def test_names_for_several_files() -> None:
    """Files' names without their checkpoint suffix, else their folders' names, else an
    error asking for names."""
    from canon.errors import ConfigError
    from canon.zoo._ingest import names_for

    assert names_for(["a/s.1.safetensors", "a/s.2.pt"]) == ["s.1", "s.2"]
    assert names_for(["r/seed0/model.pt", "r/seed1/model.pt"]) == ["seed0", "seed1"]
    with pytest.raises(ConfigError, match="tell these files apart"):
        names_for(["r/x/model.pt", "s/x/model.pt"])


def test_a_plain_safetensors_file_asks_for_its_architecture(tmp_path: Path) -> None:
    """A safetensors file that does not name its architecture is refused with the options
    to type; with them it adds."""
    zoo = init(tmp_path / "zoo")
    save_file(mlp_state(0), tmp_path / "net.safetensors")
    refused = add(zoo, tmp_path / "net.safetensors", "net", code=1)
    assert "--arch NAME --config JSON" in refused.stderr
    add(zoo, tmp_path / "net.safetensors", "net", *MLP)
    assert entry(zoo, "net")["architecture"] == "mlp"


def test_a_checkpoint_changed_while_several_are_added_is_refused(tmp_path: Path) -> None:
    """The files are read twice (checked and evaluated, then written one at a time): one
    whose weights changed in between is refused, and nothing is added."""
    files = []
    for seed in (0, 1):
        save_file(mlp_state(seed), tmp_path / f"n{seed}.safetensors")
        files.append(tmp_path / f"n{seed}.safetensors")

    def overwrite(done: int, total: int) -> None:
        if done == total:  # every file read once: change the first before it is written
            save_file(mlp_state(7), files[0])

    with Zoo.open(tmp_path / "zoo") as zoo:
        before = snapshot(zoo.root)
        with pytest.raises(CheckpointFormatError, match="changed while it was being added"):
            zoo.add_files(files, architecture="mlp", config=CONFIG, progress=overwrite)
        assert len(zoo) == 0 and snapshot(zoo.root) == before
        added = zoo.add_files(files, architecture="mlp", config=CONFIG)
        assert [e.name for e in added] == ["n0", "n1"]
        assert same(zoo.state("n0"), mlp_state(7))
