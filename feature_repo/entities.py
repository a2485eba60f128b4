"""Entities: who (user) and what (item) every feature is keyed by."""

from feast import Entity, ValueType

from recsys import schema

user = Entity(
    name=schema.USER_ENTITY,
    join_keys=[schema.USER_ID],
    value_type=ValueType.STRING,
    description="A shopper, e.g. u00042.",
)

item = Entity(
    name=schema.ITEM_ENTITY,
    join_keys=[schema.ITEM_ID],
    value_type=ValueType.STRING,
    description="A product of the catalogue, e.g. i00042.",
)
