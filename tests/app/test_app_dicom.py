"""DICOM uploads: the app reads them exactly as ``vitlens explain`` does, with the same limits and messages."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEGLSLossless

from vitlens.data import load_image, prepare

from ..dicom_fixtures import write_dicom
from ..test_medical_io import ramp12


def post(client, settings: dict, image: bytes, name: str, path: str = "/api/predict"):
    return client.post(
        path, files={"image": (name, image, "application/octet-stream")}, data={"settings": json.dumps(settings)}
    )


def one_line_error(r, status: int, *needles: str) -> str:
    assert r.status_code == status, r.text
    msg = r.json()["error"]
    assert "\n" not in msg and "Traceback" not in msg
    for n in needles:
        assert n in msg, msg
    return msg


def display(r) -> np.ndarray:
    url = r.json()["image"]["display"]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


@pytest.mark.filterwarnings("ignore::vitlens.errors.InputWarning")  # the multi-frame file
@pytest.mark.parametrize("kind", ["mono1_window", "rescale_percentile", "multiframe", "deflated", "no_magic"])
def test_dicom_upload_reads_like_the_cli(client, service, tmp_path, kind):
    raw = ramp12(70, 90)
    name = "scan.dcm"
    if kind == "mono1_window":
        path = write_dicom(tmp_path / name, raw, "MONOCHROME1", bits_stored=12, WindowCenter=1500, WindowWidth=2000)
    elif kind == "rescale_percentile":
        path = write_dicom(tmp_path / name, raw, bits_stored=12, RescaleSlope=1, RescaleIntercept=-1024)
    elif kind == "multiframe":
        path = write_dicom(tmp_path / name, np.stack([raw, raw[::-1]]), frames=2, bits_stored=12)
    elif kind == "deflated":
        path = write_dicom(
            tmp_path / name,
            raw,
            transfer_syntax=DeflatedExplicitVRLittleEndian,
            bits_stored=12,
            WindowCenter=1000,
            WindowWidth=800,
        )
    else:  # the DICM magic decides, whatever the upload is called
        path = write_dicom(tmp_path / name, raw, bits_stored=12, WindowCenter=1000, WindowWidth=800)
        name = "upload"
    data = path.read_bytes()
    r = post(client, {"model": "builtin:cells_cnn"}, data, name)
    assert r.status_code == 200, r.text
    model = service.entries["builtin:cells_cnn"].model
    expected = prepare(load_image(path), model.preprocessing)
    assert np.array_equal(display(r), expected.display)
    image = r.json()["image"]
    assert image["format"] == "DICOM" and image["mode"].endswith("12-bit")
    assert (image["width"], image["height"]) == (90, 70)


def test_dicom_upload_limits_and_errors(client, tmp_path, monkeypatch):
    from vitlens.app import uploads

    settings = {"model": "builtin:cells_vit"}
    # 10000 x 10000 declared in the header, 8 bytes of pixel data: refused before anything is decoded
    huge = write_dicom(tmp_path / "huge.dcm", np.zeros((2, 2), np.uint16), Rows=10000, Columns=10000).read_bytes()
    one_line_error(post(client, settings, huge, "huge.dcm"), 413, "huge.dcm", "10000x10000", "40 megapixels")

    good = write_dicom(tmp_path / "good.dcm", ramp12(), bits_stored=12).read_bytes()
    one_line_error(post(client, settings, good[:-300], "cut.dcm"), 400, "cut.dcm", "cannot be decoded")
    one_line_error(post(client, settings, good[:200], "head.dcm"), 400, "head.dcm", "corrupt")
    one_line_error(post(client, settings, b"\x89PNG\r\n\x1a\n" + b"\0" * 200, "fake.dcm"), 400, "fake.dcm")

    if not pydicom.pixels.get_decoder(JPEGLSLossless).is_available:
        from pydicom.encaps import encapsulate

        ls = write_dicom(
            tmp_path / "ls.dcm",
            ramp12(),
            transfer_syntax=JPEGLSLossless,
            pixel_data=encapsulate([b"\xff\xd8\xff\xf7" + b"\0" * 60]),
        ).read_bytes()
        one_line_error(post(client, settings, ls, "ls.dcm"), 415, "ls.dcm", "JPEG-LS", "not installed")

    # a deflated data set that would inflate past the limit is refused before pydicom inflates it
    zeros = write_dicom(
        tmp_path / "z.dcm", np.zeros((300, 400), np.uint16), transfer_syntax=DeflatedExplicitVRLittleEndian
    ).read_bytes()
    assert len(zeros) < 10_000
    monkeypatch.setattr(uploads, "MAX_INFLATED_BYTES", 100_000)
    one_line_error(post(client, settings, zeros, "z.dcm"), 413, "z.dcm", "inflates")


def test_patient_identifiers_never_leave_the_server(client, tmp_path, caplog):
    """A DICOM upload with patient identifiers: the explanation, its download and the server log hold none of
    them (only what reading the pixels needs: size, window, modality)."""
    import logging
    import zipfile

    phi = {
        "PatientName": "Doe^Jane",
        "PatientID": "MRN-4711-XYZ",
        "PatientBirthDate": "19610203",
        "StudyDate": "20240517",
        "InstitutionName": "St Example Hospital",
        "AccessionNumber": "ACC-998877",
        "ReferringPhysicianName": "House^Gregory",
    }
    path = write_dicom(tmp_path / "Doe_Jane.dcm", ramp12(), bits_stored=12, WindowCenter=1500, WindowWidth=2000, **phi)
    assert pydicom.dcmread(path).PatientID == "MRN-4711-XYZ"
    settings = {"model": "builtin:cells_vit", "methods": ["rollout"]}
    with caplog.at_level(logging.DEBUG):
        r = post(client, settings, path.read_bytes(), "scan.dcm", path="/api/explain")
        assert r.status_code == 200, r.text
        z = zipfile.ZipFile(io.BytesIO(client.get(r.json()["download_url"]).content))
    texts = [r.text, caplog.text] + [z.read(n).decode("latin-1") for n in z.namelist()]
    for value in [*phi.values(), "Doe", "4711", "19610203"]:
        assert not any(value in t for t in texts), value
