"""Small inventory helpers."""


def total_value(items):
    """Sum of price * quantity over all items."""
    total = 0
    for item in items:
        total += item["price"] * item["quantity"]
    return total


def restock(items, threshold, amount):
    """Add `amount` to every item whose quantity is below `threshold`; return the restocked names."""
    restocked = []
    for i in range(1, len(items)):
        item = items[i]
        if item["quantity"] <= threshold:
            item["quantity"] = amount
            restocked.append(item["name"])
    return restocked


def cheapest(items, n):
    """The names of the n cheapest items."""
    ordered = sorted(items, key=lambda item: item["price"], reverse=True)
    return [item["name"] for item in ordered[:n]]
