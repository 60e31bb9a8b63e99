"""The sharder never ends in a traceback or a hang on bad input, and `verify` / `inspect` report a damaged
shard set as findings. Every per-item failure is a counted skip whose reason says what happened; only
layout-level failures are errors; counts in = counts out + counted skips."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import pickle
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import simplejpeg

from pipeline.atomic import atomic_write_text
from pipeline.cli import main
from pipeline.errors import HandclrError, LayoutError, SkipCounter, SkipError
from pipeline.sharding import tables
from pipeline.sharding.frames import image_size
from pipeline.sharding.run import merge
from pipeline.sharding.tables import MANIFEST, MANIFEST_SCHEMA, SHARDS, SHARDS_SCHEMA, load_manifest, load_shards
from pipeline.sharding.verify import verify
from pipeline.sources import SOURCES
from pipeline.sources.doh100 import read_box_tracks
from pipeline.sources.safe_pickle import load_restricted
from tests.conftest import accounting, deadline, run, write_recipe

HANCO = [{"type": "hanco", "path": "hanco"}]
HO3D = [{"type": "ho3d", "path": "ho3d", "options": {"fps": 30}}]
VOC = [{"type": "doh100", "path": "doh100", "options": {"parts": ["voc"]}}]
VIDEO = [{"type": "doh100", "path": "doh100", "options": {"parts": ["video"]}}]
VOC_DIR = "doh100/pascal_voc_format/VOCdevkit2007_handobj_100K/VOC2007"
CSV_HEADER = "video_id,frame,x1,y1,x2,y2,side,score\n"
VIDEO_ID = "boardgame_848_sU8S98MT1Mo"


def _balanced(summary: dict) -> None:
    frames_in, out = accounting(summary)
    assert frames_in == out
    assert summary["clips_in"] == summary["clips_written"] + sum(summary["skips"]["clips"].values())


def _jpeg(h: int, w: int) -> bytes:
    return simplejpeg.encode_jpeg(np.full((h, w, 3), 128, np.uint8), quality=90)


def _forged_jpeg(side: int) -> bytes:
    """A valid 16x16 JPEG whose frame header claims side x side pixels."""
    data = bytearray(_jpeg(16, 16))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = side.to_bytes(2, "big") * 2
    return bytes(data)


def _deny(monkeypatch, target: Path, how: str) -> None:
    """Simulate a file the process may not read (tests run as root, for which chmod changes nothing)."""
    if how == "access":
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if Path(p) == target else real(p, mode, *a,
                                                                                                            **k))
    else:
        real = os.open

        def fake_open(p, flags, *args, **kwargs):
            if Path(os.fsdecode(p)) == target:
                raise PermissionError(errno.EACCES, "Permission denied", str(p))
            return real(p, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", fake_open)


# --- per-item files: one guarded path, counted skips that say what happened ---------------------------------

def test_zero_byte_image_is_a_counted_skip(tmp_path, sample_copy):
    (sample_copy / "hanco/rgb/0000/cam2/00000004.jpg").write_bytes(b"")
    summary, _ = run(tmp_path, sample_copy, HANCO)
    assert summary["skips"]["frames"] == {"image_empty": 1}
    assert "00000004.jpg: empty (0 bytes)" in summary["skips"]["examples"]["image_empty"]
    _balanced(summary)


@pytest.mark.parametrize("kind", ["image", "annotation", "video"])
def test_fifo_is_refused_without_being_opened(tmp_path, sample_copy, kind):
    path = {"image": sample_copy / "ho3d/train/ABF10/rgb/0003.jpg",
            "annotation": sample_copy / "ho3d/train/ABF10/meta/0003.pkl",
            "video": sample_copy / f"doh100/raw_videos/{VIDEO_ID}.mp4"}[kind]
    path.unlink()
    os.mkfifo(path)
    with deadline(60):
        summary, _ = run(tmp_path, sample_copy, VIDEO if kind == "video" else HO3D)
    reason = f"{kind}_not_a_file"
    assert reason in (summary["skips"]["clips"] if kind == "video" else summary["skips"]["frames"])
    assert "is a FIFO, not a regular file" in summary["skips"]["examples"][reason]
    _balanced(summary)


def test_permission_denied_is_not_missing(tmp_path, sample_copy, monkeypatch):
    pickle_path = sample_copy / "ho3d/train/ABF10/meta/0002.pkl"
    image_path = sample_copy / "ho3d/train/MC1/rgb/0007.jpg"
    _deny(monkeypatch, pickle_path, "access")
    _deny(monkeypatch, image_path, "open")
    summary, _ = run(tmp_path, sample_copy, HO3D)
    assert summary["skips"]["frames"] == {"annotation_permission_denied": 1, "image_permission_denied": 1}
    assert summary["skips"]["examples"]["image_permission_denied"] == f"{image_path}: permission denied"
    _balanced(summary)


def test_annotation_symlink_loop_and_directory_are_named(tmp_path, sample_copy):
    loop = sample_copy / "ho3d/train/ABF10/meta/0001.pkl"
    loop.unlink()
    loop.symlink_to(loop.name)
    xml = sorted((sample_copy / VOC_DIR / "Annotations").glob("*.xml"))[1]
    xml.unlink()
    xml.mkdir()
    summary, _ = run(tmp_path, sample_copy, HO3D, "ho3d")
    assert summary["skips"]["frames"] == {"annotation_symlink_loop": 1}
    _balanced(summary)
    summary, _ = run(tmp_path, sample_copy, VOC, "voc")
    assert summary["listing_skips"]["clips"] == {"annotation_not_a_file": 1}
    assert "is a directory" in summary["listing_skips"]["examples"]["annotation_not_a_file"]
    _balanced(summary)


def test_a_directory_that_cannot_be_listed_is_a_counted_skip(tmp_path, sample_copy, monkeypatch):
    cam = sample_copy / "hanco/rgb/0001/cam4"
    real = os.listdir

    def listdir(path="."):
        if Path(path) == cam:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "listdir", listdir)
    summary, _ = run(tmp_path, sample_copy, HANCO)
    assert summary["listing_skips"]["clips"] == {"directory_unreadable": 1}
    assert summary["listing_skips"]["examples"]["directory_unreadable"] == f"{cam}: cannot list (Permission denied)"
    assert summary["frames_written"] == 180
    _balanced(summary)


# --- layout-level files: a LayoutError naming the file and the problem ---------------------------------------

def test_meta_json_that_is_a_directory(tmp_path, sample_copy):
    meta = sample_copy / "hanco/meta.json"
    meta.unlink()
    meta.mkdir()
    with pytest.raises(LayoutError, match=r"hanco: .*meta.json: is a directory, not a regular file"):
        run(tmp_path, sample_copy, HANCO)


def test_train_txt_symlink_loop(tmp_path, sample_copy):
    train = sample_copy / "ho3d/train.txt"
    train.unlink()
    train.symlink_to("train.txt")
    with pytest.raises(LayoutError, match=r"not a HO-3D root: train.txt: symlink loop"):
        run(tmp_path, sample_copy, HO3D)


def test_unreadable_freihand_json(tmp_path, sample_copy, monkeypatch):
    _deny(monkeypatch, sample_copy / "freihand/training_xyz.json", "access")
    with pytest.raises(LayoutError, match=r"freihand: .*training_xyz.json: permission denied"):
        run(tmp_path, sample_copy, [{"type": "freihand", "path": "freihand"}])


def test_image_sets_list_that_is_a_directory(tmp_path, sample_copy):
    listing = sample_copy / VOC_DIR / "ImageSets/Main/trainval.txt"
    listing.unlink()
    listing.mkdir()
    sources = [{"type": "doh100", "path": "doh100", "options": {"parts": ["voc"], "image_sets": ["trainval"]}}]
    with pytest.raises(LayoutError, match=r"trainval.txt: is a directory"):
        run(tmp_path, sample_copy, sources)


# --- names, boxes, headers: bounded before anything is allocated -----------------------------------------------

def test_frame_names_with_non_ascii_digits_are_not_frame_numbers(tmp_path, sample_copy):
    cam = sample_copy / "hanco/rgb/0000/cam1"
    shutil.copy(cam / "00000003.jpg", cam / "0000000\u0663.jpg")  # ARABIC-INDIC DIGIT THREE
    rgb = sample_copy / "ho3d/train/ABF10/rgb"
    shutil.copy(rgb / "0003.jpg", rgb / "00\u00b23.jpg")  # SUPERSCRIPT TWO: isdigit() but not int()
    summary, _ = run(tmp_path, sample_copy, HANCO, "hanco")
    assert summary["listing_skips"]["frames"] == {"unexpected_file": 1}
    assert summary["frames_written"] == 192
    summary, _ = run(tmp_path, sample_copy, HO3D, "ho3d")
    assert summary["listing_skips"]["frames"] == {"unexpected_file": 1}
    _balanced(summary)


def test_a_box_a_billion_pixels_wide_is_a_counted_skip(tmp_path, sample_copy):
    xml = sorted((sample_copy / VOC_DIR / "Annotations").glob("*.xml"))[0]
    xml.write_text(xml.read_text().replace("<xmax>220</xmax>", "<xmax>1000000000</xmax>"))
    start = time.monotonic()
    summary, _ = run(tmp_path, sample_copy, VOC)
    assert time.monotonic() - start < 30
    assert summary["skips"]["frames"] == {"box_too_large": 1}
    assert "crop of a 640x360 image" in summary["skips"]["examples"]["box_too_large"]
    _balanced(summary)


def test_forged_image_header_is_refused_before_decoding(tmp_path, sample_copy):
    (sample_copy / "hanco/rgb/0001/cam0/00000002.jpg").write_bytes(_forged_jpeg(30000))
    start = time.monotonic()
    summary, _ = run(tmp_path, sample_copy, HANCO)
    assert time.monotonic() - start < 30
    assert summary["skips"]["frames"] == {"image_too_large": 1}
    assert "header claims 30000x30000 pixels" in summary["skips"]["examples"]["image_too_large"]
    _balanced(summary)
    png = bytearray(cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    png[16:24] = (30000).to_bytes(4, "big") * 2
    with pytest.raises(SkipError, match="header claims 30000x30000") as exc:
        image_size(bytes(png), "x.png")
    assert exc.value.reason == "image_too_large"


def test_passthrough_frame_of_the_wrong_size_is_never_stored(tmp_path, sample_copy):
    (sample_copy / "hanco/rgb/0000/cam3/00000005.jpg").write_bytes(_jpeg(256, 256))
    summary, out = run(tmp_path, sample_copy, HANCO)
    assert summary["skips"]["frames"] == {"passthrough_wrong_size": 1}
    assert "256x256 image, hanco frames are 224x224" in summary["skips"]["examples"]["passthrough_wrong_size"]
    assert summary["frames_written"] == 191
    _balanced(summary)
    assert verify(out, deep=True) == []


# --- restricted pickles: allowed builtins cannot be turned into resource bombs ---------------------------------

class _Alloc:
    def __reduce__(self):
        return (bytes, (10**13,))


def _memo_bomb(depth: int) -> list:
    """Each level holds the previous one twice: a few hundred bytes of pickle, 2**depth leaves to walk."""
    x = [1.0]
    for _ in range(depth):
        x = [x, x]
    return x


def test_pickle_resource_bombs_are_counted_skips(tmp_path, sample_copy):
    meta = sample_copy / "ho3d/train/ABF10/meta"
    (meta / "0002.pkl").write_bytes(pickle.dumps({"camMat": _Alloc()}, protocol=2))
    (meta / "0006.pkl").write_bytes(pickle.dumps({"camMat": _memo_bomb(24)}, protocol=2))
    start = time.monotonic()
    summary, _ = run(tmp_path, sample_copy, HO3D)
    assert time.monotonic() - start < 30
    assert summary["skips"]["frames"] == {"annotation_resource_bomb": 2}
    assert "bytes(n)" in summary["skips"]["examples"]["annotation_resource_bomb"]
    _balanced(summary)


class _DirectArray:
    def __reduce__(self):
        return (np.ndarray, ((10**7, 10**6), "f8"))  # 80 TB if called


@pytest.mark.parametrize("bomb", ["memo", "ndarray"])
def test_deep_memo_bomb_and_direct_ndarray_are_refused_fast(tmp_path, bomb):
    path = tmp_path / "meta.pkl"
    obj = {"handJoints3D": _memo_bomb(60)} if bomb == "memo" else {"handPose": _DirectArray()}
    path.write_bytes(pickle.dumps(obj, protocol=2))
    with deadline(10), pytest.raises(SkipError) as exc:
        load_restricted(path)
    assert exc.value.reason == "annotation_resource_bomb"


# --- box tracks and frame rates -----------------------------------------------------------------------------

def _track_rows(n: int = 3) -> list[str]:
    return [f"{VIDEO_ID},{i},100,100,200,200,R,0.9\n" for i in range(n)]


def test_box_track_csv_with_a_bom_is_read(tmp_path):
    path = tmp_path / "boxes.csv"
    path.write_text("\ufeff" + CSV_HEADER + "".join(_track_rows()), encoding="utf-8")
    counter = SkipCounter()
    assert [d.frame for d in read_box_tracks(path, counter, 0.5)[VIDEO_ID]] == [0, 1, 2]
    assert not counter.examples


def test_malformed_box_track_rows_are_counted(tmp_path):
    path = tmp_path / "boxes.csv"
    bad = [f"{VIDEO_ID},\u0663,100,100,200,200,R,0.9\n", f"{VIDEO_ID},abc,100,100,200,200,R,0.9\n",
           f"{VIDEO_ID},4,nan,100,200,200,R,0.9\n", f"{VIDEO_ID},5,100,100,200,200,X,0.9\n"]
    path.write_text(CSV_HEADER + "".join(_track_rows() + bad))
    counter = SkipCounter()
    assert len(read_box_tracks(path, counter, 0.5)[VIDEO_ID]) == 3
    assert counter.frames == {"annotation_malformed": 4}
    assert counter.examples["annotation_malformed"] == f"{path}:5: frame '\u0663' is not a non-negative integer in " \
                                                      f"ASCII digits"


def test_duplicate_box_track_rows_do_not_duplicate_tracks(tmp_path, sample_copy):
    csv_path = sample_copy / "doh100/tracks/boxes.csv"
    lines = csv_path.read_text().splitlines(keepends=True)
    csv_path.write_text(lines[0] + "".join(line for line in lines[1:] for _ in range(2)))
    summary, out = run(tmp_path, sample_copy, VIDEO)
    assert summary["listing_skips"]["frames"] == {"box_duplicate": len(lines) - 1}
    assert summary["clips_in"] == 3  # one right track, the left one split by its long gap
    assert {r["sequence"] for r in load_manifest(out)} == {f"{VIDEO_ID}_track{t}" for t in range(3)}
    _balanced(summary)


@pytest.mark.parametrize("rate", ["0", "-30", "nan", "inf", "0/0", "1e999999999"])
def test_a_bad_frame_rate_row_skips_only_its_video(sample_copy, rate):
    meta = sample_copy / "doh100/file/meta_100DOH_video.txt"
    header, row = meta.read_text().splitlines()[:2]
    meta.write_text(f"{header}\n{row}\nother_video boardgame x {rate} 10\n")
    counter = SkipCounter()
    with deadline(10):
        clips = list(SOURCES["doh100"](sample_copy / "doh100", parts=["video"]).clips(counter))
        assert len(clips) == 3
        meta.write_text(f"{header}\n{row.replace('30000/1001', rate)}\n")
        clips = list(SOURCES["doh100"](sample_copy / "doh100", parts=["video"]).clips(counter))
    assert clips == [] and counter.clips == {"frame_rate_invalid": 1}
    assert f"frame_rate '{rate}' is not a positive rate" in counter.examples["frame_rate_invalid"]


# --- writing: disk full, damaged sidecars, merges, concurrent sharders ------------------------------------------

def test_disk_full_while_writing_the_tables(tmp_path, sample, monkeypatch, capsys):
    def full(table, where, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tables.pq, "write_table", full)
    with pytest.raises(HandclrError, match=r"writing .*manifest.parquet: No space left on device"):
        run(tmp_path, sample[0], HANCO)
    out = tmp_path / "out"
    assert not (out / MANIFEST).exists() and not list(out.glob("*.tmp")) and not (out / "summary.json").exists()
    recipe = write_recipe(tmp_path / "r.yaml", HANCO)
    assert main(["shard", "--recipe", str(recipe), "--root", str(sample[0]), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "manifest.parquet: No space left on device" in err and "Traceback" not in err
    monkeypatch.undo()
    summary, _ = run(tmp_path, sample[0], HANCO)
    assert summary["frames_written"] == 192 and verify(out) == []


def test_disk_full_while_writing_the_summary_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    path.write_text("old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(HandclrError, match=r"writing .*summary.json: No space left on device"):
        atomic_write_text(path, "new")
    assert path.read_text() == "old" and not list(tmp_path.glob("*.tmp"))


def test_truncated_index_sidecar_is_rebuilt(tmp_path, sample):
    _, clean = run(tmp_path, sample[0], HANCO, "clean", shard_bytes=300_000)
    damaged = tmp_path / "damaged"
    shutil.copytree(clean, damaged)
    side = damaged / ".index/shard-000002.json"
    side.write_text(side.read_text()[:100])
    for name in ("summary.json", MANIFEST, SHARDS):  # an interrupted run: no tables yet
        (damaged / name).unlink()
    summary, _ = run(tmp_path, sample[0], HANCO, "damaged", shard_bytes=300_000)
    assert load_shards(damaged) == load_shards(clean) and load_manifest(damaged) == load_manifest(clean)
    _balanced(summary)
    side = damaged / ".index/shard-000003.json"
    intact = side.read_text()
    side.write_text(intact[:50])  # damaged after the run finished
    run(tmp_path, sample[0], HANCO, "damaged", shard_bytes=300_000)
    assert side.read_text() == intact and load_shards(damaged) == load_shards(clean)


def _parts(tmp_path: Path, root: Path, name: str, n: int = 3, **sharding) -> Path:
    for i in range(n):
        run(tmp_path, root, HANCO, name, part=(i, n), shard_bytes=300_000, **sharding)
    return tmp_path / name


def _rows(out: Path) -> list[dict]:
    return sorted(({k: v for k, v in r.items() if k != "shard"} for r in load_manifest(out)), key=lambda r: r["key"])


def test_interrupted_merge_can_be_rerun(tmp_path, sample, monkeypatch):
    _, one = run(tmp_path, sample[0], HANCO, "one", shard_bytes=300_000)
    out = _parts(tmp_path, sample[0], "parts")
    real, calls = os.replace, {"n": 0}

    def interrupted(src, dst, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed mid-merge")
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        merge(out)
    monkeypatch.undo()
    summary = merge(out)
    assert _rows(out) == _rows(one) and summary["frames_written"] == 192
    assert verify(out, deep=True) == [] and not list(out.glob("part-*"))


def test_merge_interrupted_while_removing_parts(tmp_path, sample, monkeypatch):
    out = _parts(tmp_path, sample[0], "parts")
    real, calls = shutil.rmtree, {"n": 0}

    def interrupted(path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed while cleaning up")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", interrupted)
    with pytest.raises(KeyboardInterrupt):
        merge(out)
    monkeypatch.undo()
    assert main(["shard", "--merge", "--out", str(out)]) == 0
    assert not list(out.glob("part-*")) and verify(out, deep=True) == []


def test_merge_refuses_parts_of_different_recipes(tmp_path, sample):
    run(tmp_path, sample[0], HANCO, "mixed", part=(0, 2))
    run(tmp_path, sample[0], HANCO, "mixed", part=(1, 2), quality=80)
    with pytest.raises(HandclrError, match="parts were written from different recipes"):
        merge(tmp_path / "mixed")
    assert len(list((tmp_path / "mixed").glob("part-*"))) == 2 and not list((tmp_path / "mixed").glob("*.tar"))


@contextlib.contextmanager
def _held(directory: Path):
    """Another process's lock on a directory (flock conflicts between open file descriptions)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def test_second_sharder_on_the_same_output_fails_at_once(tmp_path, sample, capsys):
    out = tmp_path / "out"
    recipe = write_recipe(tmp_path / "r.yaml", HANCO)
    with _held(out):
        start = time.monotonic()
        assert main(["shard", "--recipe", str(recipe), "--root", str(sample[0]), "--out", str(out), "--quiet"]) == 2
        assert time.monotonic() - start < 10
    assert f"{out} is being written by another handclr shard or merge" in capsys.readouterr().err
    assert not list(out.glob("shard-*"))
    parts = _parts(tmp_path, sample[0], "parts", n=2)
    with _held(parts / "part-00001-of-00002"), pytest.raises(HandclrError, match="part-00001-of-00002 is being"):
        merge(parts)


# --- verify and inspect ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hanco_set(sample, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("hanco-set")
    return run(tmp, sample[0], HANCO, shard_bytes=300_000)[1]


@pytest.fixture
def shard_set(hanco_set, tmp_path) -> Path:
    out = tmp_path / "set"
    shutil.copytree(hanco_set, out)
    return out


def test_verify_finds_a_duplicated_manifest_row(shard_set):
    rows = load_manifest(shard_set)
    tables._write(shard_set / MANIFEST, rows + [rows[4]], MANIFEST_SCHEMA)
    assert f"{MANIFEST}: key {rows[4]['key']} listed more than once" in verify(shard_set, deep=True)


def test_verify_finds_a_duplicated_shards_row(shard_set):
    shards = load_shards(shard_set)
    tables._write(shard_set / SHARDS, shards + [shards[1]], SHARDS_SCHEMA)
    assert f"{SHARDS}: shard {shards[1]['name']} listed more than once" in verify(shard_set, deep=True)


def test_verify_compares_manifest_columns_with_the_sample_metadata(shard_set):
    rows = load_manifest(shard_set)
    rows[2]["aug_seed"] ^= 1
    rows[5]["fps"] = 30.0
    rows[7]["view"] = 9
    tables._write(shard_set / MANIFEST, rows, MANIFEST_SCHEMA)
    problems = "\n".join(verify(shard_set, deep=True))
    assert f"{rows[2]['key']}: manifest aug_seed={rows[2]['aug_seed']}" in problems
    assert f"{rows[5]['key']}: manifest fps=30.0, sample json says None" in problems
    assert f"{rows[7]['key']}: manifest view=9" in problems


def test_verify_rechecks_the_summary(shard_set):
    path = shard_set / "summary.json"
    summary = json.loads(path.read_text())
    summary["frames_written"] += 1
    summary["samples"] -= 1
    path.write_text(json.dumps(summary))
    problems = "\n".join(verify(shard_set))
    assert "frames_written is 193, expected 192" in problems and "samples is 15, expected 16" in problems
    assert "frames_in is 192, expected 193" in problems  # frames in != written + skipped


@pytest.mark.parametrize("table", [MANIFEST, SHARDS])
def test_verify_reports_a_corrupt_parquet(shard_set, table, capsys):
    (shard_set / table).write_bytes(b"PAR1 this is not parquet")
    assert main(["verify", str(shard_set), "--deep"]) == 1
    assert f"{shard_set / table}: unreadable Parquet" in capsys.readouterr().out


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_inspect_a_missing_or_corrupt_set_is_one_line(shard_set, tmp_path, damage, capsys):
    target = tmp_path / "nowhere" if damage == "missing" else shard_set
    if damage == "corrupt":
        (shard_set / MANIFEST).write_bytes(b"garbage")
    assert main(["inspect", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("handclr: error: ") and str(target) in err


def test_cli_turns_an_os_error_on_a_user_path_into_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["sample-data", "--out", str(tmp_path / "file" / "sub")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Not a directory" in err
