import pyarrow as pa
import pytest

from millet.contracts import bronze_schema, contract_for, contracts, field
from millet.contracts.base import IDENTIFIER_ROLES, rule_of


def test_every_contract_names_its_key_fields():
    for contract in contracts().values():
        assert contract.event_id and contract.event_time and contract.account
        assert contract.account in contract.raw_identifiers


def test_bronze_schema_drops_raw_identifiers_and_adds_user_key():
    contract = contract_for("commerce")
    schema = bronze_schema(contract)
    assert schema.names[0] == "user_key"
    assert not set(contract.raw_identifiers) & set(schema.names)
    assert {"device_id", "phone", "account_id"} <= set(contract.raw_identifiers)


def test_field_rules_survive_the_schema_metadata():
    status = contract_for("commerce").schema.field("status")
    assert rule_of(status).enum == ("placed", "cancelled", "returned")
    assert status.type == pa.string() and not status.nullable


def test_every_string_has_a_maximum_length_and_every_identifier_a_format():
    for contract in contracts().values():
        for f in contract.schema:
            rule = contract.rules[f.name]
            assert (rule.max_length is not None) == pa.types.is_string(f.type), (contract.channel, f.name)
            assert (rule.pattern is not None) == (rule.role in IDENTIFIER_ROLES), (contract.channel, f.name)
    assert rule_of(field("note", pa.string())).max_length == 256  # the default
    assert rule_of(field("note", pa.string(), max_length=10)).max_length == 10
    with pytest.raises(ValueError, match="pattern"):
        field("loyalty_id", pa.string(), role="identifier")


def test_unknown_channel_names_the_known_ones():
    try:
        contract_for("telepathy")
    except KeyError as exc:
        assert "commerce" in str(exc)
    else:
        raise AssertionError("expected KeyError")


def test_committed_contract_docs_are_generated_from_the_contracts():
    from millet.contracts.docs import contracts_markdown
    from millet.settings import REPO_ROOT

    committed = (REPO_ROOT / "docs" / "contracts.md").read_text()
    assert committed == contracts_markdown(), "regenerate: .venv/bin/millet contracts > docs/contracts.md"
    for contract in contracts().values():
        assert all(f"`{name}`" in committed for name in contract.schema.names)
        patterns = [rule.pattern for rule in contract.rules.values() if rule.pattern]
        assert all(f"format `{pattern}`" in committed for pattern in patterns)
    assert "`MILLET_MAX_EVENT_LATENESS_DAYS`, default 400" in committed


def test_committed_dbt_sources_are_generated_from_the_contracts():
    from millet.contracts.dbt_sources import SOURCES_FILE, dbt_sources_yaml
    from millet.settings import REPO_ROOT

    committed = (REPO_ROOT / "dbt_project" / SOURCES_FILE).read_text()
    assert committed == dbt_sources_yaml(), (
        f"regenerate: .venv/bin/millet contracts --dbt-sources > dbt_project/{SOURCES_FILE}")
