"""Feature views: the seven views of the recommender, each with its schema, TTL and tags.

TTL bounds how far back point-in-time joins look (Feast does not enforce it on online reads): zero means
"never expires" for the slowly changing user and item attributes.
"""

from datetime import timedelta

from data_sources import (
    interactions_push,
    item_embedding_source,
    item_text_embedding_source,
    items_source,
    user_embedding_source,
    user_items_source,
    users_source,
)
from entities import item, user
from feast import FeatureView, Field
from feast.types import Array, Float32, Float64, Int64, String, UnixTimestamp

from recsys import schema

COSINE = "cosine"  # Feast's postgres store accepts only the lower-case name

item_features = FeatureView(
    name=schema.VIEW_ITEM_FEATURES,
    entities=[item],
    ttl=timedelta(0),
    schema=[
        Field(name=schema.PRODUCT_NAME, dtype=String),
        Field(name=schema.CATEGORY, dtype=String, description="'Department|Group|Leaf' path"),
        Field(name=schema.ABOUT_PRODUCT, dtype=String),
        Field(name=schema.ACTUAL_PRICE, dtype=Float64),
        Field(name=schema.DISCOUNTED_PRICE, dtype=Float64),
        Field(name=schema.DISCOUNT_PERCENTAGE, dtype=Float64),
        Field(name=schema.RATING, dtype=Float64),
        Field(name=schema.RATING_COUNT, dtype=Int64),
        Field(name=schema.ARRIVAL_DATE, dtype=UnixTimestamp, description="later than now = not yet available"),
        Field(name=schema.STOCK_QUANTITY, dtype=Int64, description="0 = out of stock (availability filter)"),
        Field(name=schema.IMG_LINK, dtype=String),
        Field(name=schema.PRODUCT_LINK, dtype=String),
    ],
    source=items_source,
    online=True,  # the predictor reads item attributes for its filters and responses
    tags={"team": "recsys", "kind": "attributes"},
    description="Catalogue attributes of an item; its event time is its arrival date.",
)

user_features = FeatureView(
    name=schema.VIEW_USER_FEATURES,
    entities=[user],
    ttl=timedelta(0),
    schema=[
        Field(name=schema.USER_NAME, dtype=String),
        Field(name=schema.SIGNUP_DATE, dtype=UnixTimestamp),
        Field(name=schema.PREFERENCES, dtype=String, description="'|'-joined preferred leaf categories"),
        Field(name=schema.AGE, dtype=Int64),
        Field(name=schema.GENDER, dtype=String),
    ],
    source=users_source,
    online=True,  # the predictor reads them to build the user tower's input
    tags={"team": "recsys", "kind": "attributes"},
    description="Profile of a user; its event time is the signup date.",
)

interactions_features = FeatureView(
    name=schema.VIEW_INTERACTIONS,
    entities=[user, item],
    ttl=timedelta(days=365),
    schema=[
        Field(name=schema.INTERACTION_ID, dtype=String),
        Field(name=schema.INTERACTION_TYPE, dtype=String, description="positive_view|negative_view|cart|purchase|rate"),
        Field(name=schema.RATING, dtype=Float64, description="stars, only on `rate`"),
        Field(name=schema.QUANTITY, dtype=Int64, description="only on purchases and carts"),
        Field(name=schema.REVIEW_TITLE, dtype=String),
        Field(name=schema.REVIEW_CONTENT, dtype=String),
    ],
    source=interactions_push,
    # online: the latest live event per (user, item), pushed by the predictor (not materialized from the file);
    # the online path's history filter and user tower read recsys.history, written in the events' transaction
    online=True,
    tags={"team": "recsys", "kind": "events"},
    description="User-item interaction events: offline for training sets, online as pushed live events.",
)

item_embedding = FeatureView(
    name=schema.VIEW_ITEM_EMBEDDING,
    entities=[item],
    ttl=timedelta(days=30),
    schema=[
        Field(
            name=schema.ITEM_VECTOR,
            dtype=Array(Float32),
            vector_index=True,
            vector_length=schema.EMBEDDING_DIM,
            vector_search_metric=COSINE,
        ),
        Field(name=schema.MODEL_VERSION, dtype=String),
    ],
    source=item_embedding_source,
    online=True,
    tags={"team": "recsys", "kind": "embedding", "model": "two-tower"},
    description="Item tower output; the ANN index lives in the pgvector table, this view serves lookups.",
)

user_embedding = FeatureView(
    name=schema.VIEW_USER_EMBEDDING,
    entities=[user],
    ttl=timedelta(days=30),
    schema=[
        Field(
            name=schema.USER_VECTOR,
            dtype=Array(Float32),
            vector_index=True,
            vector_length=schema.EMBEDDING_DIM,
            vector_search_metric=COSINE,
        ),
        Field(name=schema.MODEL_VERSION, dtype=String),
    ],
    source=user_embedding_source,
    online=True,
    tags={"team": "recsys", "kind": "embedding", "model": "two-tower"},
    description="User tower output for known users, published with the item vectors.",
)

item_textual_features_embed = FeatureView(
    name=schema.VIEW_ITEM_TEXT_EMBEDDING,
    entities=[item],
    ttl=timedelta(days=30),
    schema=[
        Field(
            name=schema.TEXT_VECTOR,
            dtype=Array(Float32),
            vector_index=True,
            vector_length=schema.TEXT_EMBEDDING_DIM,
            vector_search_metric=COSINE,
        ),
        Field(name=schema.MODEL_VERSION, dtype=String),
    ],
    source=item_text_embedding_source,
    online=True,
    tags={"team": "recsys", "kind": "embedding", "model": "all-MiniLM-L6-v2"},
    description="Sentence embedding of about_product, for semantic search.",
)

user_items = FeatureView(
    name=schema.VIEW_USER_ITEMS,
    entities=[user],
    ttl=timedelta(days=30),
    schema=[
        Field(name=schema.TOP_K_ITEM_IDS, dtype=Array(String), description="best first"),
        Field(name=schema.TOP_K_SCORES, dtype=Array(Float32)),
        Field(name=schema.MODEL_VERSION, dtype=String),
    ],
    source=user_items_source,
    online=True,
    tags={"team": "recsys", "kind": "recommendations", "model": "two-tower"},
    description="Batch top-k items per user, a fallback when the online path cannot answer.",
)
