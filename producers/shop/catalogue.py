"""The demo shop's generated world: a deterministic catalogue and demo users.

Everything here is a pure function of a seed, so two shops started with the
same seed sell the same products under the same ids, and a traffic simulator
can compute the same catalogue (and the users' passwords) without asking the
shop. Product names combine realistic vocabularies, per category: an
adjective, a material (or flavour, finish, ...) and a product noun, e.g.
"Rustic Cast Iron Skillet". Prices are integer cents ending in .99 or .49.

Demo users are ``user0001`` .. ``user0500`` (by default); the password of a
user is ``password_for(user_id)``, i.e. ``demo-`` followed by the user id
(``user0042`` logs in with ``demo-user0042``).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

DEFAULT_SEED = 2017
DEFAULT_PRODUCTS = 1200
DEFAULT_USERS = 500

ADJECTIVES = (
    "Classic", "Modern", "Vintage", "Compact", "Deluxe", "Essential", "Rustic", "Nordic", "Premium",
    "Everyday", "Lightweight", "Handmade", "Minimalist", "Heritage", "Urban", "Coastal", "Alpine",
    "Artisan", "Pro", "Eco", "Signature", "Travel", "Slim", "Cozy", "Bold", "Soft", "Midnight",
    "Golden", "Misty", "Sunset", "Ultra", "Studio", "Wild", "Quiet", "Bright", "Timeless",
)

# slug -> (display name, materials, nouns, (lowest, highest) price in whole yuan)
CATEGORIES: dict[str, tuple[str, tuple[str, ...], tuple[str, ...], tuple[int, int]]] = {
    "kitchen": ("Kitchen", ("Ceramic", "Cast Iron", "Stainless Steel", "Bamboo", "Copper", "Stoneware",
                            "Glass", "Walnut"),
                ("Mug", "Teapot", "Skillet", "Cutting Board", "Chef's Knife", "Mixing Bowl", "Colander",
                 "Saucepan", "Dutch Oven", "Coffee Grinder", "French Press", "Salad Bowl"), (8, 180)),
    "home": ("Home & Living", ("Wool", "Linen", "Cotton", "Rattan", "Brass", "Oak", "Marble", "Velvet"),
             ("Throw Blanket", "Cushion", "Table Lamp", "Vase", "Wall Clock", "Rug", "Candle Holder",
              "Picture Frame", "Storage Basket", "Mirror"), (12, 260)),
    "clothing": ("Clothing", ("Cotton", "Merino", "Denim", "Linen", "Cashmere", "Fleece", "Corduroy",
                              "Organic Cotton"),
                 ("T-Shirt", "Hoodie", "Jacket", "Sweater", "Scarf", "Beanie", "Chinos", "Dress", "Shirt",
                  "Socks"), (9, 220)),
    "shoes": ("Shoes", ("Leather", "Suede", "Canvas", "Mesh", "Rubber", "Nubuck"),
              ("Sneakers", "Boots", "Loafers", "Sandals", "Slippers", "Running Shoes", "Hiking Boots"),
              (25, 240)),
    "electronics": ("Electronics", ("Aluminium", "Matte Black", "Graphite", "Wireless", "Noise-Cancelling",
                                    "Fast-Charging"),
                    ("Headphones", "Bluetooth Speaker", "Power Bank", "USB-C Charger", "Keyboard", "Mouse",
                     "Webcam", "Smartwatch", "Earbuds", "Monitor Stand"), (15, 400)),
    "sports": ("Sports", ("Cork", "Neoprene", "Carbon", "Steel", "Rubber", "Foam"),
               ("Yoga Mat", "Dumbbell Set", "Water Bottle", "Jump Rope", "Tennis Racket", "Football",
                "Cycling Gloves", "Resistance Bands"), (6, 200)),
    "outdoor": ("Outdoor", ("Nylon", "Ripstop", "Canvas", "Titanium", "Down", "Polyester"),
                ("Tent", "Sleeping Bag", "Backpack", "Headlamp", "Camping Stove", "Hammock", "Trekking Poles",
                 "Cooler"), (15, 350)),
    "beauty": ("Beauty", ("Lavender", "Rose", "Aloe", "Argan", "Shea", "Vanilla", "Citrus", "Green Tea"),
               ("Face Cream", "Lip Balm", "Shampoo", "Body Lotion", "Hand Soap", "Serum", "Perfume",
                "Bath Salts"), (4, 90)),
    "toys": ("Toys", ("Wooden", "Plush", "Felt", "Magnetic", "Cardboard", "Tin"),
             ("Building Blocks", "Puzzle", "Teddy Bear", "Kite", "Toy Train", "Board Game", "Yo-Yo",
              "Rocking Horse"), (5, 120)),
    "books": ("Books & Stationery", ("Hardcover", "Leather-Bound", "Spiral", "Paperback", "Linen-Bound",
                                     "Dotted"),
              ("Notebook", "Journal", "Cookbook", "Atlas", "Sketchbook", "Planner", "Field Guide"), (3, 60)),
    "garden": ("Garden", ("Galvanised", "Terracotta", "Zinc", "Cedar", "Recycled", "Enamel"),
               ("Watering Can", "Planter", "Pruning Shears", "Garden Hose", "Bird Feeder", "Trowel",
                "Seed Kit", "Wheelbarrow"), (4, 160)),
    "office": ("Office", ("Walnut", "Aluminium", "Felt", "Leather", "Acrylic", "Steel"),
               ("Desk Lamp", "Pen Set", "Desk Organizer", "Office Chair", "Stapler", "Monitor Riser",
                "Fountain Pen", "Desk Mat"), (5, 300)),
    "pets": ("Pets", ("Orthopedic", "Waterproof", "Reflective", "Organic", "Chew-Proof", "Quilted"),
             ("Dog Bed", "Cat Tree", "Leash", "Pet Bowl", "Chew Toy", "Collar", "Litter Box"), (4, 150)),
    "grocery": ("Grocery", ("Organic", "Single-Origin", "Fair-Trade", "Smoked", "Wildflower", "Cold-Pressed"),
                ("Coffee Beans", "Green Tea", "Dark Chocolate", "Olive Oil", "Honey", "Pasta", "Granola",
                 "Hot Sauce"), (2, 45)),
}

FIRST_NAMES = ("Li", "Wei", "Fang", "Anna", "James", "Maria", "Chen", "Yuki", "Omar", "Sofia", "Lucas",
               "Mei", "Noah", "Emma", "Ravi", "Lena", "Hugo", "Ines", "Jun", "Zara")
LAST_NAMES = ("Wang", "Zhang", "Liu", "Smith", "Garcia", "Müller", "Tanaka", "Rossi", "Kim", "Silva",
              "Novak", "Haddad", "Dubois", "Khan", "Larsen", "Moreau")


@dataclass(frozen=True)
class Product:
    id: str              # "P00001"
    name: str
    category: str        # slug, see CATEGORIES
    price_cents: int
    description: str


@dataclass(frozen=True)
class DemoUser:
    id: str              # "user0001"; also the login name
    name: str


def product_id(n: int) -> str:
    return f"P{n:05d}"


def generate_catalogue(seed: int = DEFAULT_SEED, count: int = DEFAULT_PRODUCTS) -> list[Product]:
    """`count` products with unique names, the same list for the same seed."""
    rng = random.Random(seed)
    slugs = sorted(CATEGORIES)
    products: list[Product] = []
    names: set[str] = set()
    while len(products) < count:
        slug = rng.choice(slugs)
        label, materials, nouns, (low, high) = CATEGORIES[slug]
        adjective, material, noun = rng.choice(ADJECTIVES), rng.choice(materials), rng.choice(nouns)
        name = f"{adjective} {material} {noun}"
        if name in names:
            continue
        names.add(name)
        price_cents = rng.randint(low, high) * 100 - rng.choice((1, 1, 1, 51))
        products.append(Product(
            id=product_id(len(products) + 1), name=name, category=slug, price_cents=price_cents,
            description=f"{adjective} {noun.lower()} ({material.lower()}), from our {label} range."))
    return products


def user_id(n: int) -> str:
    return f"user{n:04d}"


def password_for(user: str) -> str:
    """The demo password rule: ``demo-<user id>`` (public on purpose: these are demo accounts)."""
    return f"demo-{user}"


def generate_users(seed: int = DEFAULT_SEED, count: int = DEFAULT_USERS) -> list[DemoUser]:
    rng = random.Random(seed + 1)
    return [DemoUser(id=user_id(n), name=f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}")
            for n in range(1, count + 1)]
