"""Offline sources: parquet files in data/, paths relative to this repo (Feast resolves them against it).

The three data files come from `recsys generate`; the four embedding files from `recsys publish`. A missing
file only makes `feast apply` log a warning, so the repo applies before the first publish.
Live user events (POST /v1/events) reach Feast through `interactions_push`, whose offline side is the same
interactions file (the event log is merged into it before each retraining, see recsys.events.export).
"""

from feast import FileSource, PushSource

from recsys import schema

# Users and items have no separate event time: a user's features hold from signup, an item's from its arrival
# (`recsys feast materialize` reaches far enough ahead to load items that have not arrived yet).
users_source = FileSource(
    name="users_source",
    path=f"data/{schema.USERS_FILE}",
    timestamp_field=schema.SIGNUP_DATE,
    description="recommendation_users.parquet written by `recsys generate`.",
)

items_source = FileSource(
    name="items_source",
    path=f"data/{schema.ITEMS_FILE}",
    timestamp_field=schema.ARRIVAL_DATE,
    description="recommendation_items.parquet written by `recsys generate`.",
)

interactions_source = FileSource(
    name="interactions_source",
    path=f"data/{schema.INTERACTIONS_FILE}",
    timestamp_field=schema.TIMESTAMP,
    description="recommendation_interactions.parquet written by `recsys generate`.",
)

interactions_push = PushSource(
    name=schema.PUSH_SOURCE_INTERACTIONS,
    batch_source=interactions_source,
    description="User events accepted by the predictor (POST /v1/events), pushed online after they are committed.",
)

item_embedding_source = FileSource(
    name="item_embedding_source",
    path=f"data/{schema.ITEM_EMBEDDING_FILE}",
    timestamp_field=schema.EVENT_TIMESTAMP,
    description="Two-tower item vectors written by `recsys publish`.",
)

user_embedding_source = FileSource(
    name="user_embedding_source",
    path=f"data/{schema.USER_EMBEDDING_FILE}",
    timestamp_field=schema.EVENT_TIMESTAMP,
    description="Two-tower user vectors written by `recsys publish`.",
)

item_text_embedding_source = FileSource(
    name="item_text_embedding_source",
    path=f"data/{schema.ITEM_TEXT_EMBEDDING_FILE}",
    timestamp_field=schema.EVENT_TIMESTAMP,
    description="MiniLM embeddings of about_product written by `recsys publish`.",
)

user_items_source = FileSource(
    name="user_items_source",
    path=f"data/{schema.USER_ITEMS_FILE}",
    timestamp_field=schema.EVENT_TIMESTAMP,
    description="Batch top-k recommendations per user written by `recsys publish`.",
)
