"""The single source of truth for column names, dtypes, vector sizes, file, table and view names.

Every other module imports names from here; a column name or vector size is written nowhere else.
This module imports nothing of ours.
"""

from __future__ import annotations

from typing import Final

# ---------------------------------------------------------------- vector sizes
EMBEDDING_DIM: Final = 64  # two-tower output (user and item vectors)
TEXT_EMBEDDING_DIM: Final = 384  # all-MiniLM-L6-v2 sentence embeddings

# ---------------------------------------------------------------- files
USERS_FILE: Final = "recommendation_users.parquet"
ITEMS_FILE: Final = "recommendation_items.parquet"
INTERACTIONS_FILE: Final = "recommendation_interactions.parquet"
DATA_FILES: Final = (USERS_FILE, ITEMS_FILE, INTERACTIONS_FILE)

# ---------------------------------------------------------------- id / timestamp columns
USER_ID: Final = "user_id"
ITEM_ID: Final = "item_id"
INTERACTION_ID: Final = "interaction_id"
TIMESTAMP: Final = "timestamp"  # interactions' event time
EVENT_TIMESTAMP: Final = "event_timestamp"  # Feast sources' event time column
CREATED_TIMESTAMP: Final = "created"  # Feast sources' created (tie-break) column
MODEL_VERSION: Final = "model_version"

# ---------------------------------------------------------------- users
USER_NAME: Final = "user_name"
SIGNUP_DATE: Final = "signup_date"
PREFERENCES: Final = "preferences"  # '|'-joined leaf category names
AGE: Final = "age"
GENDER: Final = "gender"

# ---------------------------------------------------------------- items
PRODUCT_NAME: Final = "product_name"
CATEGORY: Final = "category"  # 'Department|Group|Leaf' path
ABOUT_PRODUCT: Final = "about_product"
ACTUAL_PRICE: Final = "actual_price"
DISCOUNTED_PRICE: Final = "discounted_price"
DISCOUNT_PERCENTAGE: Final = "discount_percentage"
RATING: Final = "rating"
RATING_COUNT: Final = "rating_count"
ARRIVAL_DATE: Final = "arrival_date"
STOCK_QUANTITY: Final = "stock_quantity"
IMG_LINK: Final = "img_link"
PRODUCT_LINK: Final = "product_link"

# ---------------------------------------------------------------- interactions
INTERACTION_TYPE: Final = "interaction_type"
QUANTITY: Final = "quantity"
REVIEW_TITLE: Final = "review_title"
REVIEW_CONTENT: Final = "review_content"

CATEGORY_SEPARATOR: Final = "|"
PREFERENCE_SEPARATOR: Final = "|"

# interaction types, and how much each counts as a positive in training (negative_view is not a positive;
# `rate` is weighted by its rating, see RATE_WEIGHT_PER_STAR)
POSITIVE_VIEW: Final = "positive_view"
NEGATIVE_VIEW: Final = "negative_view"
CART: Final = "cart"
PURCHASE: Final = "purchase"
RATE: Final = "rate"
INTERACTION_TYPES: Final = (POSITIVE_VIEW, NEGATIVE_VIEW, CART, PURCHASE, RATE)
POSITIVE_WEIGHTS: Final = {POSITIVE_VIEW: 1.0, CART: 2.0, PURCHASE: 3.0, NEGATIVE_VIEW: 0.0}
RATE_WEIGHT_PER_STAR: Final = 0.6  # a 5-star rating weighs 3.0 (= purchase), a 1-star 0.6

# ---------------------------------------------------------------- dtypes (pandas) of the parquet files
USER_DTYPES: Final = {
    USER_ID: "string",
    USER_NAME: "string",
    SIGNUP_DATE: "datetime64[ns, UTC]",
    PREFERENCES: "string",
    AGE: "int64",
    GENDER: "string",
}
ITEM_DTYPES: Final = {
    ITEM_ID: "string",
    PRODUCT_NAME: "string",
    CATEGORY: "string",
    ABOUT_PRODUCT: "string",
    ACTUAL_PRICE: "float64",
    DISCOUNTED_PRICE: "float64",
    DISCOUNT_PERCENTAGE: "float64",
    RATING: "float64",
    RATING_COUNT: "int64",
    ARRIVAL_DATE: "datetime64[ns, UTC]",
    STOCK_QUANTITY: "int64",
    IMG_LINK: "string",
    PRODUCT_LINK: "string",
}
INTERACTION_DTYPES: Final = {
    INTERACTION_ID: "string",
    USER_ID: "string",
    ITEM_ID: "string",
    TIMESTAMP: "datetime64[ns, UTC]",
    INTERACTION_TYPE: "string",
    RATING: "Float64",  # nullable: only `rate` interactions carry one
    QUANTITY: "Int64",  # nullable: only purchases (and carts) carry one
    REVIEW_TITLE: "string",
    REVIEW_CONTENT: "string",
}
# the columns training and evaluation cannot do without; everything else is optional
REQUIRED_COLUMNS: Final = {
    USERS_FILE: (USER_ID,),
    ITEMS_FILE: (ITEM_ID,),
    INTERACTIONS_FILE: (USER_ID, ITEM_ID, TIMESTAMP),
}

# ---------------------------------------------------------------- Feast
FEAST_PROJECT: Final = "feast_edb_rec_sys"
USER_ENTITY: Final = "user"
ITEM_ENTITY: Final = "item"
VIEW_ITEM_FEATURES: Final = "item_features"
VIEW_USER_FEATURES: Final = "user_features"
VIEW_INTERACTIONS: Final = "interactions_features"
VIEW_ITEM_EMBEDDING: Final = "item_embedding"
VIEW_USER_EMBEDDING: Final = "user_embedding"
VIEW_ITEM_TEXT_EMBEDDING: Final = "item_textual_features_embed"
VIEW_USER_ITEMS: Final = "user_items"
FEATURE_VIEWS: Final = (
    VIEW_ITEM_FEATURES,
    VIEW_USER_FEATURES,
    VIEW_INTERACTIONS,
    VIEW_ITEM_EMBEDDING,
    VIEW_USER_EMBEDDING,
    VIEW_ITEM_TEXT_EMBEDDING,
    VIEW_USER_ITEMS,
)
# vector / list feature columns of the embedding views
ITEM_VECTOR: Final = "item_vector"
USER_VECTOR: Final = "user_vector"
TEXT_VECTOR: Final = "about_product_embedding"
TOP_K_ITEM_IDS: Final = "top_k_item_ids"  # user_items: the batch top-k list per user
TOP_K_SCORES: Final = "top_k_scores"
USER_ITEMS_TOP_K: Final = 64

# embedding parquet sources written by `publish` (offline side of the embedding views), in the data dir
ITEM_EMBEDDING_FILE: Final = "item_embedding.parquet"
USER_EMBEDDING_FILE: Final = "user_embedding.parquet"
ITEM_TEXT_EMBEDDING_FILE: Final = "item_textual_features_embed.parquet"
USER_ITEMS_FILE: Final = "user_items.parquet"

# ---------------------------------------------------------------- pgvector (our own ANN table)
ITEM_VECTOR_TABLE: Final = "recsys_item_vectors"
TEXT_VECTOR_TABLE: Final = "recsys_item_text_vectors"
MODEL_REGISTRY_TABLE: Final = "recsys_model_versions"  # which model_version is live
VECTOR_COLUMN: Final = "embedding"
USER_HISTORY_TABLE: Final = "recsys_user_history"  # per-user item ids by interaction type, for the history filter

# ---------------------------------------------------------------- user history table (history filter, online path)
HISTORY_PURCHASED: Final = "purchased_item_ids"  # purchase and rate interactions
HISTORY_CARTED: Final = "carted_item_ids"
HISTORY_VIEWED: Final = "viewed_item_ids"  # positive views
HISTORY_UPDATED_AT: Final = "updated_at"  # newest interaction time folded into the row
# positive items of events newer than the live model's data set, oldest first: the stored user vector lacks them,
# so a user with any is embedded by the user tower from (training history + these)
HISTORY_PENDING: Final = "pending_item_ids"

# ---------------------------------------------------------------- event log (POST /v1/events, recsys.events)
EVENT_LOG_TABLE: Final = "recsys_events"  # durable log of user events; event_id makes a replay a duplicate
EVENT_ID: Final = "event_id"  # the client's idempotency key; becomes interaction_id when exported
RECEIVED_AT: Final = "received_at"  # server time the event was committed
PUSH_SOURCE_INTERACTIONS: Final = "interactions_push"  # Feast PushSource feeding VIEW_INTERACTIONS online

# ---------------------------------------------------------------- pgvector tables' bookkeeping columns (vector_index/)
VECTOR_UPDATED_AT: Final = "updated_at"  # when the row last changed
REGISTRY_SEQUENCE: Final = "version_seq"  # monotonic publish order: defines "newer" (model_version is a hash)
REGISTERED_AT: Final = "registered_at"
LIVE_SINCE: Final = "live_since"  # set when a version goes live; the live one has the latest

# ---------------------------------------------------------------- Feast feature services
SERVICE_USER_ONLINE: Final = "user_online"  # user_features + user_embedding + user_items
SERVICE_ITEM_ONLINE: Final = "item_online"  # item_features + item_embedding + item_textual_features_embed
SERVICE_TRAINING: Final = "training"  # interactions_features + user_features + item_features
FEAST_ENV_PREFIX: Final = (
    "RECSYS_FEAST_PG_"  # ${VAR}s of feature_store.yaml: HOST, PORT, DATABASE, USER, PASSWORD, SSLMODE
)
