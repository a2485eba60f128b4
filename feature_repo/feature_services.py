"""Feature services: the feature sets each consumer reads, versioned together."""

from feast import FeatureService
from feature_views import (
    interactions_features,
    item_embedding,
    item_features,
    item_textual_features_embed,
    user_embedding,
    user_features,
    user_items,
)

from recsys import schema

user_online_service = FeatureService(
    name=schema.SERVICE_USER_ONLINE,
    features=[user_features, user_embedding, user_items],
    tags={"consumer": "predictor"},
    description="What the predictor reads about the requesting user.",
)

item_online_service = FeatureService(
    name=schema.SERVICE_ITEM_ONLINE,
    features=[item_features, item_embedding, item_textual_features_embed],
    tags={"consumer": "predictor"},
    description="What the predictor and search read about candidate items.",
)

training_service = FeatureService(
    name=schema.SERVICE_TRAINING,
    features=[interactions_features, user_features, item_features],
    tags={"consumer": "train"},
    description="Point-in-time training rows: interaction events joined with user and item attributes.",
)
