"""Every bad-input case: a clear error naming the file and the problem, or a counted skip that keeps
frames in = frames written + frames skipped."""

from __future__ import annotations

import os
import pickle

import pytest

from pipeline.cli import main
from pipeline.errors import HandclrError, LayoutError, StrictModeError
from pipeline.sharding import writer
from tests.conftest import accounting, run, write_recipe

HANCO = [{"type": "hanco", "path": "hanco"}]
HO3D = [{"type": "ho3d", "path": "ho3d", "options": {"fps": 30}}]
VOC_DIR = "doh100/pascal_voc_format/VOCdevkit2007_handobj_100K/VOC2007"


def _balanced(summary: dict) -> None:
    frames_in, out = accounting(summary)
    assert frames_in == out


def test_missing_root_and_wrong_layout_name_what_is_missing(tmp_path, sample_copy):
    with pytest.raises(LayoutError, match=r"hanco: root .*nowhere.* HanCo layout"):
        run(tmp_path, tmp_path, [{"type": "hanco", "path": "nowhere"}])
    with pytest.raises(LayoutError, match=r"not a HO-3D root: missing train, train.txt"):
        run(tmp_path, sample_copy, [{"type": "ho3d", "path": "hanco", "options": {"splits": ["train"]}}])
    with pytest.raises(LayoutError, match=r"not a HanCo root: missing .*meta.json"):
        (sample_copy / "hanco" / "meta.json").unlink()
        run(tmp_path, sample_copy, HANCO)


def test_corrupt_and_truncated_images_are_counted(tmp_path, sample_copy):
    frame = sample_copy / "hanco/rgb/0000/cam2/00000004.jpg"
    frame.write_bytes(frame.read_bytes()[:500])
    (sample_copy / "hanco/rgb/0001/cam5/00000001.jpg").write_bytes(b"not a jpeg at all")
    summary, _ = run(tmp_path, sample_copy, HANCO)
    assert summary["skips"]["frames"]["image_undecodable"] == 2
    assert "00000004.jpg#4: corrupt or truncated JPEG" in summary["skips"]["examples"]["image_undecodable"]
    _balanced(summary)


def test_truncated_png_in_ho3d_v2(tmp_path):
    import numpy as np

    from pipeline.sampledata.layouts import ho3d

    ho3d(tmp_path / "ho3d", np.random.default_rng(0), version=2, frames=10, eval_frames=3)
    png = tmp_path / "ho3d/train/ABF10/rgb/0003.png"
    png.write_bytes(png.read_bytes()[:300])
    summary, _ = run(tmp_path, tmp_path, HO3D)
    assert summary["skips"]["frames"] == {"image_undecodable": 1}
    _balanced(summary)


def test_truncated_or_unreadable_video_is_counted(tmp_path, sample_copy):
    video = next((sample_copy / "doh100/raw_videos").glob("*.mp4"))
    video.write_bytes(video.read_bytes()[:2000])
    sources = [{"type": "doh100", "path": "doh100", "options": {"parts": ["video"]}}]
    summary, _ = run(tmp_path, sample_copy, sources)
    skipped = summary["skips"]["frames"]
    assert set(skipped) <= {"video_unreadable", "frame_undecodable", "frame_missing"} and skipped
    assert summary["frames_written"] == 0
    _balanced(summary)


def test_malformed_and_missing_annotations(tmp_path, sample_copy):
    (sample_copy / "ho3d/train/ABF10/meta/0002.pkl").write_bytes(b"\x80\x02garbage")
    (sample_copy / "ho3d/train/MC1/meta/0007.pkl").unlink()
    summary, _ = run(tmp_path, sample_copy, HO3D, "ho3d")
    assert summary["skips"]["frames"]["annotation_malformed"] == 1
    assert summary["skips"]["frames"]["annotation_missing"] == 1
    assert "0002.pkl: malformed pickle" in summary["skips"]["examples"]["annotation_malformed"]
    _balanced(summary)

    xml = sample_copy / VOC_DIR / "Annotations"
    first = sorted(xml.glob("*.xml"))[0]
    first.write_text("<annotation><object><name>hand</name>")
    summary, _ = run(tmp_path, sample_copy, [{"type": "doh100", "path": "doh100", "options": {"parts": ["voc"]}}],
                     "voc")
    assert summary["listing_skips"]["frames"] == {"annotation_malformed": 1}
    assert first.name in summary["listing_skips"]["examples"]["annotation_malformed"]

    (sample_copy / "hanco/xyz/0001/00000003.json").write_text("{broken")
    summary, _ = run(tmp_path, sample_copy, HANCO, "hanco")
    assert summary["skips"]["frames"]["annotation_malformed"] == 8  # one frame in each of the 8 cameras
    _balanced(summary)

    (sample_copy / "freihand/training_xyz.json").write_text("[[1, 2")
    with pytest.raises(LayoutError, match=r"training_xyz.json: not valid JSON"):
        run(tmp_path, sample_copy, [{"type": "freihand", "path": "freihand"}], "frei")


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {_Evil.marker}",))


def test_pickle_with_a_forbidden_global_is_refused_never_run(tmp_path, sample_copy):
    _Evil.marker = tmp_path / "pwned"
    (sample_copy / "ho3d/train/ABF10/meta/0004.pkl").write_bytes(pickle.dumps({"handJoints3D": _Evil()}))
    summary, _ = run(tmp_path, sample_copy, HO3D)
    assert not _Evil.marker.exists()
    assert summary["skips"]["frames"] == {"annotation_forbidden": 1}
    assert "forbidden global posix.system" in summary["skips"]["examples"]["annotation_forbidden"]
    _balanced(summary)


def test_boxes_outside_the_image_or_degenerate(tmp_path, sample_copy):
    xml_dir = sample_copy / VOC_DIR / "Annotations"
    files = sorted(xml_dir.glob("*.xml"))
    text = files[0].read_text()
    files[0].write_text(text.replace("<xmin>101</xmin>", "<xmin>900</xmin>").replace("<xmax>220</xmax>",
                                                                                      "<xmax>990</xmax>"))
    text = files[2].read_text()
    files[2].write_text(text.replace("<xmax>170</xmax>", "<xmax>50</xmax>"))
    summary, _ = run(tmp_path, sample_copy, [{"type": "doh100", "path": "doh100", "options": {"parts": ["voc"]}}])
    assert summary["skips"]["frames"] == {"box_outside_image": 1, "box_degenerate": 1}
    _balanced(summary)


def test_short_sequences_are_counted_not_dropped(tmp_path, sample):
    summary, _ = run(tmp_path, sample[0], HANCO, min_frames=13)  # sample clips have 12 frames
    assert summary["skips"]["clips"] == {"too_short": 16} and summary["skips"]["frames"] == {"too_short": 192}
    assert summary["samples"] == 0
    _balanced(summary)


def test_duplicate_keys_are_counted(tmp_path, sample):
    summary, out = run(tmp_path, sample[0], HANCO + HANCO)
    assert summary["skips"]["clips"] == {"duplicate_key": 16}
    assert summary["skips"]["frames"] == {"duplicate_key": 192}
    assert summary["samples"] == 16
    _balanced(summary)
    assert main(["verify", str(out)]) == 0


def test_disk_full_never_leaves_a_partial_shard_under_a_final_name(tmp_path, sample, monkeypatch):
    real_write, written = writer._HashingFile.write, {"n": 0}

    def full_disk(self, data):
        written["n"] += len(data)
        if written["n"] > 700_000:
            raise OSError(28, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(writer._HashingFile, "write", full_disk)
    with pytest.raises(HandclrError, match="No space left on device"):
        run(tmp_path, sample[0], HANCO, shard_bytes=500_000)
    out = tmp_path / "out"
    assert not list(out.glob("*.tmp"))
    for tar in out.glob("shard-*.tar"):  # only complete shards, each with its sidecar
        assert (out / ".index" / tar.name.replace(".tar", ".json")).exists()
    monkeypatch.setattr(writer._HashingFile, "write", real_write)
    summary, _ = run(tmp_path, sample[0], HANCO, shard_bytes=500_000)
    _balanced(summary)
    assert summary["frames_written"] == 192 and main(["verify", str(out), "--deep"]) == 0


def test_non_utf8_file_names_are_counted(tmp_path, sample_copy):
    cam = os.fsencode(sample_copy / "hanco/rgb/0000/cam1")
    with open(cam + b"/\xff\xfe00000099.jpg", "wb") as f:
        f.write(b"x")
    summary, _ = run(tmp_path, sample_copy, HANCO)
    assert summary["listing_skips"]["frames"] == {"non_utf8_name": 1}
    assert "\\xff\\xfe00000099.jpg" in summary["listing_skips"]["examples"]["non_utf8_name"]
    assert summary["frames_written"] == 192


def test_strict_turns_a_skip_into_an_error(tmp_path, sample_copy, capsys):
    frame = sample_copy / "hanco/rgb/0000/cam2/00000004.jpg"
    frame.write_bytes(frame.read_bytes()[:500])
    with pytest.raises(StrictModeError, match="00000004.jpg"):
        run(tmp_path, sample_copy, HANCO, strict=True)
    recipe = write_recipe(tmp_path / "r.yaml", HANCO)
    assert main(["shard", "--recipe", str(recipe), "--root", str(sample_copy), "--out", str(tmp_path / "o"),
                 "--strict", "--quiet"]) == 2
    assert "image_undecodable" in capsys.readouterr().err
