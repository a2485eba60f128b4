"""Values other parties rely on: the served model's name and paths, the database-client label, the quality gate,
the default data-set sizes and the default image model.

Like schema.py this module imports nothing of ours, so every layer (recsys, components, pipelines, serving, bench)
can read it. Column, view and vector names live in schema.py, not here.
"""

from __future__ import annotations

# The KServe model name the predictor registers; clients and the InferenceService probes use it.
SERVED_MODEL_NAME = "recommender"
MODEL_STATUS_PATH = f"/v1/models/{SERVED_MODEL_NAME}"  # GET: 200 once the model is loaded
PREDICT_PATH = f"/v1/models/{SERVED_MODEL_NAME}:predict"  # V1 protocol
INFER_PATH = f"/v2/models/{SERVED_MODEL_NAME}/infer"  # V2 protocol
EVENTS_PATH = "/v1/events"  # POST user events (recsys.events.contract), on the predictor's HTTP port
# read-only GETs for browsing clients such as the storefront (recsys.browse): /v1/users[/{user_id}],
# /v1/items/{item_id}, /v1/categories
USERS_PATH = "/v1/users"
ITEMS_PATH = "/v1/items"
CATEGORIES_PATH = "/v1/categories"

# The NetworkPolicy lets only pods carrying this label (with this value) reach Postgres.
DB_CLIENT_LABEL = "recsys.io/db-client"
DB_CLIENT_LABEL_VALUE = "true"

# The quality gate compares this test metric of the model with popularity's and a minimum; validation maximises it.
GATE_METRIC = "recall@10"
# The served model reranks this many of the two-tower's nearest items (known items left out) with item-item
# weights (recsys.model.rerank); the offline metrics rank the same many.
RERANK_CANDIDATES = 200

# Default synthetic data set: the sizes the replaced system's generator used.
DEFAULT_N_USERS = 1000
DEFAULT_N_ITEMS = 5000
DEFAULT_N_INTERACTIONS = 20000
# share of fresh picks that follow the declared categories in the synthetic data (generate --preference-strength)
DEFAULT_PREFERENCE_STRENGTH = 0.5
DEFAULT_SIZES = {"n_users": DEFAULT_N_USERS, "n_items": DEFAULT_N_ITEMS, "n_interactions": DEFAULT_N_INTERACTIONS}

# Stable Diffusion v1.5, the replaced system's checkpoint, under the Hub id that still hosts its weights.
DEFAULT_IMAGE_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
