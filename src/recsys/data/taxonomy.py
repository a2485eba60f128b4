"""An Amazon-like category tree and the text templates that name and describe its products.

Every leaf carries synonyms that appear in the product name and description, so the text of an item says
what category it is in (semantic search relies on it), and a median price that sets its price distribution.
Items also carry a price tier (budget .. luxury) whose brands and wording show in the text too; users prefer
tiers as well as categories, which gives models a signal beyond the category.
"""

from __future__ import annotations

from dataclasses import dataclass

from recsys.schema import CATEGORY_SEPARATOR


@dataclass(frozen=True)
class Leaf:
    department: str
    group: str
    name: str  # unique across the tree; users' preferences name leaves
    synonyms: tuple[str, ...]  # nouns for product names and descriptions; the first is the singular name
    median_price: float  # USD, for the "standard" tier

    @property
    def path(self) -> str:
        return CATEGORY_SEPARATOR.join((self.department, self.group, self.name))


@dataclass(frozen=True)
class Tier:
    name: str
    price_factor: float  # multiplies the leaf's median price
    brands: tuple[str, ...]
    adjectives: tuple[str, ...]


TIERS: tuple[Tier, ...] = (
    Tier("budget", 0.55, ("Basix", "ValuePro", "EcoLine", "Simplio"), ("affordable", "basic", "no-frills", "compact")),
    Tier(
        "standard",
        1.0,
        ("Nordway", "Everwell", "Brightly", "Kestrel"),
        ("reliable", "versatile", "everyday", "classic"),
    ),
    Tier(
        "premium",
        1.8,
        ("Auralux", "Vantor", "Helix", "Meridian"),
        ("premium", "advanced", "high-performance", "refined"),
    ),
    Tier(
        "luxury",
        3.2,
        ("Maison Lumiere", "Obsidian", "Aurelia", "Sterling & Co"),
        ("luxury", "handcrafted", "signature", "exclusive"),
    ),
)

# department -> group -> [(leaf name, synonyms, median price)]
_TREE: dict[str, dict[str, list[tuple[str, tuple[str, ...], float]]]] = {
    "Electronics": {
        "Audio": [
            ("Headphones", ("headphones", "over-ear headset", "wireless headphones"), 80),
            ("Earbuds", ("earbuds", "in-ear earphones", "true wireless earbuds"), 60),
            ("Bluetooth Speakers", ("bluetooth speaker", "portable speaker", "wireless speaker"), 70),
        ],
        "Computers": [
            ("Laptops", ("laptop", "notebook computer", "ultrabook"), 900),
            ("Monitors", ("monitor", "computer display", "LED screen"), 250),
            ("Keyboards", ("keyboard", "mechanical keyboard", "typing keyboard"), 60),
        ],
        "Mobile": [
            ("Smartphones", ("smartphone", "mobile phone", "android phone"), 500),
            ("Phone Cases", ("phone case", "protective cover", "shockproof case"), 18),
            ("Power Banks", ("power bank", "portable charger", "battery pack"), 35),
        ],
    },
    "Home & Kitchen": {
        "Kitchen Appliances": [
            ("Coffee Makers", ("coffee maker", "espresso machine", "drip coffee brewer"), 90),
            ("Blenders", ("blender", "smoothie maker", "countertop blender"), 70),
            ("Air Fryers", ("air fryer", "oil-free fryer", "convection fryer"), 100),
        ],
        "Cookware": [
            ("Frying Pans", ("frying pan", "non-stick skillet", "saute pan"), 35),
            ("Knife Sets", ("knife set", "chef knives", "kitchen knife block"), 60),
        ],
        "Home Decor": [
            ("Table Lamps", ("table lamp", "bedside lamp", "desk light"), 45),
            ("Wall Clocks", ("wall clock", "silent clock", "decorative clock"), 30),
        ],
    },
    "Books": {
        "Fiction": [
            ("Mystery Novels", ("mystery novel", "detective thriller", "crime fiction book"), 15),
            ("Science Fiction", ("science fiction novel", "sci-fi book", "space opera"), 16),
            ("Romance Novels", ("romance novel", "love story", "romantic fiction book"), 13),
        ],
        "Non-Fiction": [
            ("Cookbooks", ("cookbook", "recipe book", "cooking guide"), 25),
            ("Biographies", ("biography", "memoir", "life story book"), 20),
            ("Programming Books", ("programming book", "software engineering guide", "coding manual"), 40),
        ],
    },
    "Clothing": {
        "Men": [
            ("Men's T-Shirts", ("men's t-shirt", "crew neck tee", "cotton tee for men"), 20),
            ("Men's Jackets", ("men's jacket", "winter coat for men", "outdoor jacket"), 90),
        ],
        "Women": [
            ("Women's Dresses", ("women's dress", "summer dress", "midi dress"), 45),
            ("Women's Handbags", ("handbag", "women's shoulder bag", "leather purse"), 60),
        ],
        "Shoes": [
            ("Running Shoes", ("running shoes", "jogging sneakers", "trail runners"), 85),
            ("Boots", ("boots", "leather boots", "ankle boots"), 110),
        ],
    },
    "Sports & Outdoors": {
        "Fitness": [
            ("Yoga Mats", ("yoga mat", "exercise mat", "non-slip fitness mat"), 28),
            ("Dumbbells", ("dumbbells", "adjustable weights", "hand weights"), 55),
            ("Fitness Trackers", ("fitness tracker", "activity band", "step counter watch"), 70),
        ],
        "Camping": [
            ("Tents", ("tent", "camping tent", "backpacking shelter"), 130),
            ("Sleeping Bags", ("sleeping bag", "mummy bag", "camping sleeping bag"), 60),
        ],
        "Cycling": [
            ("Bike Helmets", ("bike helmet", "cycling helmet", "bicycle helmet"), 45),
            ("Bike Lights", ("bike light", "bicycle headlight", "cycling lamp"), 25),
        ],
    },
    "Beauty & Personal Care": {
        "Skin Care": [
            ("Face Moisturizers", ("face moisturizer", "hydrating cream", "daily facial lotion"), 25),
            ("Sunscreens", ("sunscreen", "SPF lotion", "sun protection cream"), 15),
        ],
        "Hair Care": [
            ("Shampoos", ("shampoo", "hair cleanser", "sulfate-free shampoo"), 12),
            ("Hair Dryers", ("hair dryer", "blow dryer", "ionic hair dryer"), 50),
        ],
        "Fragrance": [
            ("Perfumes", ("perfume", "eau de parfum", "fragrance for women"), 65),
            ("Colognes", ("cologne", "eau de toilette", "fragrance for men"), 55),
        ],
    },
    "Toys & Games": {
        "Building Toys": [
            ("Building Blocks", ("building blocks", "brick construction set", "stacking blocks"), 35),
            ("Model Kits", ("model kit", "scale model", "assembly kit"), 40),
        ],
        "Games": [
            ("Board Games", ("board game", "family strategy game", "tabletop game"), 30),
            ("Jigsaw Puzzles", ("jigsaw puzzle", "1000-piece puzzle", "picture puzzle"), 18),
        ],
        "Dolls & Figures": [
            ("Action Figures", ("action figure", "collectible figure", "poseable figure"), 22),
            ("Dolls", ("doll", "fashion doll", "baby doll"), 25),
        ],
    },
    "Grocery": {
        "Beverages": [
            ("Coffee Beans", ("coffee beans", "whole bean coffee", "arabica roast"), 14),
            ("Green Tea", ("green tea", "matcha tea", "loose leaf tea"), 10),
        ],
        "Snacks": [
            ("Protein Bars", ("protein bar", "energy bar", "snack bar"), 20),
            ("Dark Chocolate", ("dark chocolate", "cocoa bar", "chocolate gift box"), 9),
        ],
    },
    "Office Products": {
        "Writing": [
            ("Fountain Pens", ("fountain pen", "ink pen", "calligraphy pen"), 35),
            ("Notebooks", ("notebook", "ruled journal", "hardcover notepad"), 12),
        ],
        "Furniture": [
            ("Office Chairs", ("office chair", "ergonomic desk chair", "swivel chair"), 180),
            ("Standing Desks", ("standing desk", "height-adjustable desk", "sit-stand workstation"), 320),
        ],
    },
    "Pet Supplies": {
        "Dogs": [
            ("Dog Food", ("dog food", "dry kibble", "puppy food"), 40),
            ("Dog Toys", ("dog toy", "chew toy", "fetch toy"), 12),
        ],
        "Cats": [
            ("Cat Trees", ("cat tree", "cat tower", "scratching post"), 70),
            ("Cat Litter", ("cat litter", "clumping litter", "odor-control litter"), 18),
        ],
    },
}

LEAVES: tuple[Leaf, ...] = tuple(
    Leaf(department, group, name, synonyms, float(price))
    for department, groups in _TREE.items()
    for group, leaves in groups.items()
    for name, synonyms, price in leaves
)
DEPARTMENTS: tuple[str, ...] = tuple(_TREE)

FEATURES: tuple[str, ...] = (
    "built to last with durable materials",
    "designed for comfort and ease of use",
    "backed by a two-year warranty",
    "easy to clean and maintain",
    "lightweight and travel friendly",
    "thoughtfully designed with sustainable materials",
    "tested for quality and safety",
    "a favourite among customers for its value",
)
USES: tuple[str, ...] = (
    "everyday use",
    "gifting",
    "home and travel",
    "beginners and experts alike",
    "busy families",
    "professionals",
    "weekends and holidays",
)

FIRST_NAMES: tuple[str, ...] = (
    "Alex",
    "Maria",
    "John",
    "Aisha",
    "Wei",
    "Sofia",
    "Liam",
    "Priya",
    "Noah",
    "Emma",
    "Mateo",
    "Yuki",
    "Olga",
    "Kwame",
    "Lena",
    "Omar",
    "Chloe",
    "Ravi",
    "Ines",
    "Sam",
)
LAST_NAMES: tuple[str, ...] = (
    "Smith",
    "Garcia",
    "Chen",
    "Khan",
    "Müller",
    "Rossi",
    "Kim",
    "Silva",
    "Novak",
    "Okafor",
    "Dubois",
    "Tanaka",
    "Patel",
    "Jensen",
    "Haddad",
    "Lopez",
)

REVIEW_TITLES: dict[int, tuple[str, ...]] = {
    1: ("Very disappointed", "Would not buy again", "Broke quickly"),
    2: ("Not great", "Below expectations", "Meh"),
    3: ("It's okay", "Average", "Does the job"),
    4: ("Very good", "Happy with it", "Good value"),
    5: ("Excellent!", "Love it", "Exactly what I wanted"),
}
REVIEW_BODIES: dict[int, str] = {
    1: "This {noun} stopped working after a week and support did not help.",
    2: "The {noun} works, but the quality is lower than the price suggests.",
    3: "A decent {noun}; nothing special, but it does what it says.",
    4: "Solid {noun}, well made and good for the money. Minor quirks.",
    5: "Fantastic {noun}! Great quality, arrived fast, I use it every day.",
}


def product_name(leaf: Leaf, brand: str, adjective: str, synonym: str, model: int) -> str:
    return f"{brand} {adjective.title()} {synonym.title()} {leaf.name[:1].upper()}{model}"


def product_description(
    leaf: Leaf, tier: Tier, brand: str, adjective: str, synonym: str, feature: str, use: str
) -> str:
    """Names the leaf, a synonym, its group, department and tier, so sentence embeddings place the item."""
    return (
        f"A {adjective} {synonym} from {brand}'s {tier.name} line in {leaf.group} ({leaf.department}). "
        f"This {leaf.name.lower()} item is {feature}. Ideal for {use}."
    )
