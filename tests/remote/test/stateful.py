"""Test service built by create(context): the object's public methods are the methods."""


class Counter:
    def __init__(self, context):
        self.context = context
        self.count = 0

    def incr(self, n=1):
        self.count += n
        return self.count

    async def whoami(self):
        return (self.context or {}).get("server_id")


def create(context):
    return Counter(context)
