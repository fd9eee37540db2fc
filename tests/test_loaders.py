import numpy as np
import pandas as pd
import pytest

from components.frames import write_table
from components.loaders import (
    DataFormatError,
    MissingColumnError,
    detect_format,
    load_transactions,
)
from components.mapping import ColumnMapping, MappingError, load_mapping, parse_map_options


def test_csv_and_parquet_load_to_the_same_canonical_frame(tmp_path, small_frame):
    head = small_frame.head(500)
    csv = write_table(head, tmp_path / "tx.csv")
    parquet = write_table(head, tmp_path / "tx.parquet")
    from_csv = load_transactions(csv).frame
    from_parquet = load_transactions(parquet).frame
    assert list(from_csv["transaction_id"]) == list(head["transaction_id"])
    assert from_csv["source_row"].tolist() == list(range(1, 501))
    np.testing.assert_allclose(from_csv["amount"].astype(float), from_parquet["amount"])


def test_mapping_from_yaml_and_from_the_command_line(tmp_path, small_frame):
    renamed = small_frame.head(100).rename(columns={"transaction_id": "TXN", "amount": "AMT"})
    path = write_table(renamed, tmp_path / "bank.csv")
    mapping_file = tmp_path / "bank.yaml"
    mapping_file.write_text("name: bank\ncolumns:\n  transaction_id: TXN\n  amount: AMT\n")
    by_file = load_transactions(path, load_mapping(mapping_file)).frame
    by_option = load_transactions(
        path, ColumnMapping().merged(parse_map_options(["transaction_id=TXN", "amount=AMT"]))
    ).frame
    assert by_file["amount"].tolist() == by_option["amount"].tolist()
    assert by_file["transaction_id"].tolist() == small_frame["transaction_id"].head(100).tolist()


def test_creditcard_layout_loads_through_its_builtin_mapping_and_says_what_it_derived(
    tmp_path, creditcard_csv
):
    original = creditcard_csv(tmp_path / "creditcard.csv")
    result = load_transactions(tmp_path / "creditcard.csv", load_mapping("creditcard"))
    frame = result.frame
    assert len(frame) == len(original)
    assert frame["transaction_id"].is_unique
    assert frame["customer_id"].nunique() == 1 and frame["terminal_id"].nunique() == 1
    assert result.extra_columns == [f"V{i}" for i in range(1, 29)]
    first = pd.Timestamp("2013-09-01T00:00:00Z") + pd.Timedelta(seconds=original["Time"].iloc[0])
    assert frame["timestamp"].iloc[0] == first
    assert frame["is_fraud"].astype(int).tolist() == original["Class"].tolist()
    assert any("no customer or terminal ids" in note for note in result.notes)
    assert any("transaction_id derived as row_number" in note for note in result.notes)


def test_missing_required_column_is_named_with_a_suggested_mapping(tmp_path, small_frame):
    path = write_table(small_frame.head(10).rename(columns={"amount": "amt"}), tmp_path / "x.csv")
    with pytest.raises(MissingColumnError, match=r"'amount' missing.*--map amount=amt"):
        load_transactions(path)


def test_label_required_for_training(tmp_path, small_frame):
    path = write_table(small_frame.head(10).drop(columns="is_fraud"), tmp_path / "x.csv")
    assert len(load_transactions(path).frame) == 10
    with pytest.raises(MissingColumnError, match="'is_fraud' missing"):
        load_transactions(path, require_label=True)


def test_files_that_are_not_what_they_claim(tmp_path, small_frame):
    csv_named_parquet = tmp_path / "fake.parquet"
    small_frame.head(5).to_csv(csv_named_parquet, index=False)
    with pytest.raises(DataFormatError, match=r"claims to be Parquet.*--format csv"):
        load_transactions(csv_named_parquet)
    # ... and the override makes it load
    assert len(load_transactions(csv_named_parquet, file_format="csv").frame) == 5

    parquet_named_csv = tmp_path / "fake.csv"
    small_frame.head(5).to_parquet(parquet_named_csv)
    with pytest.raises(DataFormatError, match="claims to be CSV but is a Parquet file"):
        detect_format(parquet_named_csv)

    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataFormatError, match="empty"):
        load_transactions(empty)

    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1" + b"\x00" * 64)
    with pytest.raises(DataFormatError, match="not a readable Parquet file"):
        load_transactions(broken)

    with pytest.raises(DataFormatError, match="no such file"):
        load_transactions(tmp_path / "nope.csv")


def test_bad_mappings_are_explained(tmp_path):
    with pytest.raises(MappingError, match="'amout' is not a canonical column"):
        parse_map_options(["amout=AMT"])
    with pytest.raises(MappingError, match="expected canonical=source"):
        parse_map_options(["amount"])
    with pytest.raises(MappingError, match=r"neither a file nor a built-in mapping.*creditcard"):
        load_mapping("nonexistent")
    bad = tmp_path / "bad.yaml"
    bad.write_text("columns:\n  amount: AMT\ncolumn: {}\n")
    with pytest.raises(MappingError, match="unknown keys \\['column'\\]"):
        load_mapping(bad)
    bad.write_text("derive:\n  customer_id: guess\n")
    with pytest.raises(MappingError, match="cannot derive 'customer_id'"):
        load_mapping(bad)
