"""Real ids at the door: hashed with the secret salt at ingest and in orders, refused without it, never stored."""

import hashlib
import hmac

import pandas as pd
import pytest

from components.core.keys import SALT_ENV, SALT_FILE_ENV, SaltError, key_salt, pseudonymise
from components.core.storage import to_parquet_bytes
from components.data.datasets import DatasetStore
from components.data.raw_ids import hash_frame
from tests.conftest import TINY

SALT = "0123456789abcdef-test-salt"


def test_the_salt_comes_from_the_environment_or_a_mounted_secret_and_must_be_long(tmp_path):
    assert key_salt({}) is None
    assert key_salt({SALT_ENV: SALT}) == SALT.encode()
    mounted = tmp_path / "salt"
    mounted.write_text(SALT + "\n")  # a Secret mounted as a file ends with a newline
    assert key_salt({SALT_FILE_ENV: str(mounted)}) == SALT.encode()
    with pytest.raises(SaltError, match="at least 16"):
        key_salt({SALT_ENV: "short"})
    with pytest.raises(SaltError, match="cannot read the key salt"):
        key_salt({SALT_FILE_ENV: str(tmp_path / "missing")})


def test_keys_are_keyed_hashes_stable_per_id_and_unlike_under_another_salt():
    keys = pseudonymise(["C-1", "C-2", "C-1", None, float("nan")], SALT.encode())
    assert keys[0] == keys[2] != keys[1] and keys[3] is None and keys[4] is None
    assert keys[0] == hmac.new(SALT.encode(), b"C-1", hashlib.sha256).hexdigest()[:16]
    # Whoever knows the id but not the salt cannot recompute the key (a plain hash of the id would be guessable).
    assert keys[0] != hashlib.sha256(b"C-1").hexdigest()[:16]
    assert pseudonymise(["C-1"], b"another-salt-of-16-bytes")[0] != keys[0]


def _raw_export(frame: pd.DataFrame) -> pd.DataFrame:
    """What a real feed sends: the upstream's own ids where the data holds keys."""
    out = frame.copy()
    codes = {k: f"cust-{i:05d}" for i, k in enumerate(sorted(frame["customer_key"].unique()))}
    out.insert(out.columns.get_loc("customer_key"), "customer_id", out.pop("customer_key").map(codes))
    out.insert(out.columns.get_loc("driver_key"), "driver_id", "drv-" + out.pop("driver_key").str[:6])
    return out


def test_orders_with_raw_ids_are_hashed_or_refused():
    orders = pd.DataFrame({"customer_id": ["a", "b"], "stop_index": [0, 1]})
    hashed = hash_frame(orders, "orders x", {SALT_ENV: SALT})
    assert list(hashed.columns) == ["customer_key", "stop_index"]
    assert hashed["customer_key"].tolist() == pseudonymise(["a", "b"], SALT.encode())
    with pytest.raises(SaltError, match=f"orders x carries raw ids \\(customer_id\\).*{SALT_ENV}"):
        hash_frame(orders, "orders x", {})
    with pytest.raises(SaltError, match="both customer_id and customer_key"):
        hash_frame(orders.assign(customer_key="k"), "orders x", {SALT_ENV: SALT})
    keyed = pd.DataFrame({"customer_key": ["k"]})
    assert hash_frame(keyed, "orders y", {}) is keyed  # no raw ids: no salt needed, nothing copied


def test_ingest_hashes_a_real_feed_before_versioning_and_refuses_it_without_a_salt(tmp_path, tiny_weeks,
                                                                                   monkeypatch):
    from components.steps.ingest import ingest

    root = str(tmp_path / "data")
    store = DatasetStore(root)
    weeks = tiny_weeks[:2]
    for name, frame in weeks:
        store.storage.write_bytes(store.raw_uri(name), to_parquet_bytes(_raw_export(frame)))
    landed = {name: (tmp_path / "data" / "raw" / f"{name}.parquet").read_bytes() for name, _ in weeks}

    monkeypatch.delenv(SALT_ENV, raising=False)
    monkeypatch.delenv(SALT_FILE_ENV, raising=False)
    with pytest.raises(SaltError, match=f"landing batch {weeks[0][0]} carries raw ids .*{SALT_ENV}"):
        ingest(root, tmp_path / "refused")
    # Refused, and nothing lost: the feed is as it landed, and no version holds it.
    assert {n: (tmp_path / "data" / "raw" / f"{n}.parquet").read_bytes() for n in landed} == landed
    assert store.latest() is None

    monkeypatch.setenv(SALT_ENV, SALT)
    out = ingest(root, tmp_path / "ingest")
    assert out.hashed_rows == out.rows == sum(len(f) for _, f in weeks)
    version = pd.concat([store.read_batch(out.data_version, n) for n, _ in weeks])
    assert not {"customer_id", "driver_id"} & set(version.columns)
    exported = pd.concat([_raw_export(f) for _, f in weeks])
    expected = pseudonymise(exported["customer_id"], SALT.encode())
    assert version["customer_key"].tolist() == expected
    # One customer keeps one key across weeks, so the customer history still builds.
    first, second = (set(store.read_batch(out.data_version, n)["customer_key"]) for n, _ in weeks)
    assert first & second
    landing = pd.concat([pd.read_parquet(tmp_path / "data" / "raw" / f"{n}.parquet") for n in landed])
    assert "customer_id" not in landing.columns and landing["customer_key"].tolist() == expected
    assert ingest(root, tmp_path / "again").hashed_rows == 0  # keys already: nothing to hash twice


def test_forget_by_raw_id_hashes_it_into_the_key_it_forgets(tmp_path, tiny_weeks, monkeypatch, capsys):
    from components.cli.main import main
    from components.data.forget import tombstones

    ws, root = tmp_path / "ws", tmp_path / "data"
    store = DatasetStore(str(root))
    name, frame = tiny_weeks[0]
    key = pseudonymise(["cust-00001"], SALT.encode())[0]
    frame = frame.assign(customer_key=[key] * 5 + list(frame["customer_key"].iloc[5:]))
    store.storage.write_bytes(store.raw_uri(name), to_parquet_bytes(frame))
    args = ["--config", str(TINY), "--workspace", str(ws), "data", "forget", "--customer-id", "cust-00001",
            "--data-root", str(root)]
    monkeypatch.delenv(SALT_ENV, raising=False)
    monkeypatch.delenv(SALT_FILE_ENV, raising=False)
    assert main(args) == 2 and SALT_ENV in capsys.readouterr().err
    monkeypatch.setenv(SALT_ENV, SALT)
    assert main(args) == 0
    assert "5 rows removed" in capsys.readouterr().out
    assert set(tombstones(str(root))) == {key}
    assert key not in set(pd.read_parquet(root / "raw" / f"{name}.parquet")["customer_key"])

