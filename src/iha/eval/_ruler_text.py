"""Built-in text for the RULER generators, written for this project (no third-party text).

``ESSAY`` is the fallback essay haystack used when no directory of text files is given: plain
expository prose about everyday things, repeated as often as a context length needs.
``ADJECTIVES`` and ``NOUNS`` make the word keys ("adjective-noun") of the needles.
"""

ESSAY = """\
A river begins as rain that falls on high ground and gathers in small channels. The channels
join, and the water picks up speed as the land tilts toward the sea. Over many years the moving
water cuts through soft rock and leaves the hard rock standing, which is why valleys are often
narrow where the stone is strong and wide where it is weak. People have always settled near
rivers, because a river brings water for drinking, fish for eating and a road for boats.

Bread is one of the oldest cooked foods. Flour and water are mixed into a dough, and the dough
is kneaded until it becomes smooth and elastic. Yeast, a tiny living fungus, eats some of the
sugar in the flour and releases gas, and the gas is trapped in the dough so that it rises. When
the loaf is baked, the heat sets the structure and browns the crust. A good baker learns to
judge the dough by touch rather than by the clock, since warm kitchens work faster than cold ones.

A mechanical clock keeps time with a regular beat. In older clocks a swinging pendulum sets the
beat, because a pendulum of a given length always takes about the same time to swing. A set of
gears counts the swings and turns the hands. The energy comes from a falling weight or a wound
spring, and a small part called the escapement releases that energy one tick at a time. When the
clock runs fast or slow, the owner can move a small nut on the pendulum to change its length.

Libraries did not always lend their books. For a long time books were copied by hand and were
so costly that they were chained to the shelves. Printing made books cheaper, and public
libraries spread as more people learned to read. A modern library still sorts its books so that
a reader can find them, usually by subject, and a catalogue records where every book belongs.
Many readers say that the best part of a library is the book they find by accident on the way
to the one they were looking for.

Bees live in colonies that can hold tens of thousands of workers. Each worker has a job that
changes as it grows older: young bees clean the cells and feed the larvae, and older bees fly
out to gather nectar and pollen. A returning forager can tell the others where flowers are by
a short dance whose direction and length point the way. The colony stores honey for the winter,
when there are no flowers and the bees cluster together to keep warm.

A bridge must carry its own weight as well as the weight of whatever crosses it. The simplest
bridge is a beam resting on two supports, but a beam sags in the middle when it is long. An arch
turns the downward push into a sideways push that the ground can resist, which is why stone
arches have stood for centuries. A suspension bridge hangs the road from cables that run over
tall towers and are anchored firmly at each end.

Snow forms when water vapour freezes onto tiny particles high in the clouds. The crystals grow
six arms because of the way water molecules fit together when they freeze. The exact shape of
each crystal depends on the temperature and the moisture it meets on the way down, so no two
falling flakes follow quite the same path. Fresh snow is mostly air, which is why it muffles
sound and why a thick layer keeps the ground beneath it from freezing hard.

Maps shrink the world so that it fits on a page. Every flat map distorts something, because the
surface of the earth is curved and a curved surface cannot be flattened without stretching or
tearing it. Some maps keep the shapes of small areas correct, others keep the sizes of areas
correct, and sailors long preferred maps on which a straight line is a line of constant compass
direction. A good map also leaves things out, since a map that showed everything would be as
hard to read as the land itself.

A garden needs light, water and soil that holds both air and moisture. Gardeners improve heavy
soil by digging in compost, which feeds the small creatures that keep the soil loose. Plants that
grow well together are often planted side by side, and a tall crop can shade a smaller one that
dislikes the full afternoon sun. Weeding is easiest after rain, when the roots slide out of the
soft ground, and a layer of straw or leaves keeps new weeds from taking hold.

Trains changed the way people thought about distance. Before railways, a journey that now takes
an hour could take a whole day by road. Towns began to keep the same time as one another so that
timetables made sense, and the idea of a standard time for a whole region grew out of that need.
Steam engines boiled water to push pistons, and later engines used diesel fuel or electricity
from wires above the track.

Salt was once valuable enough to be traded over long distances. It can be taken from the sea by
letting sea water evaporate in shallow pools under the sun, or dug from the ground where ancient
seas dried up long ago. Salt preserves food by drawing water out of it, which slows the growth
of the small organisms that cause decay. Before refrigerators, salted fish and meat kept families
fed through the winter months.

Paper is made from plant fibres that are soaked, beaten and spread in a thin layer to dry. The
fibres tangle together as the water drains away, and the tangled mat becomes a sheet. Rags were
once the main source of fibre, and later wood pulp took their place because trees are plentiful.
Paper that is meant to last a long time is made without acid, since acid slowly turns the sheet
yellow and brittle.

The moon has no light of its own; it shines because it reflects sunlight. As it travels around
the earth we see different amounts of its sunlit half, and so its shape seems to change from a
thin curve to a full disc and back again in about a month. The pull of the moon raises the
tides, and coastal towns have long kept tables that say when the water will be high or low.

Good tools last a long time when they are kept clean and dry. A saw cuts best when its teeth are
sharp and set slightly outward so that the blade does not bind in the cut. A plane shaves thin
curls of wood from a board until the surface is flat and smooth. Carpenters often say that a tool
is only as good as the hand that holds it, but a dull tool makes even a careful hand work twice
as hard.
"""

# fmt: off
ADJECTIVES = (
    "able", "airy", "amber", "ancient", "angry", "bold", "brave", "breezy", "bright", "brisk",
    "calm", "candid", "careful", "cheerful", "chilly", "clever", "cloudy", "cosy", "crisp",
    "curious", "daring", "dark", "dazzling", "deep", "dusty", "eager", "early", "earnest",
    "elegant", "fancy", "fearless", "fierce", "fluffy", "fond", "frosty", "gentle", "giant",
    "glad", "golden", "graceful", "grand", "green", "happy", "hardy", "hasty", "hidden", "honest",
    "humble", "icy", "idle", "jolly", "keen", "kind", "lively", "lofty", "loyal", "lucky", "merry",
    "mighty", "misty", "modest", "narrow", "nimble", "noble", "odd", "patient", "plain", "polite",
    "proud", "quick", "quiet", "rapid", "rare", "rocky", "rosy", "rough", "royal", "rustic",
    "sandy", "scarlet", "shiny", "silent", "silver", "simple", "sleepy", "smooth", "snowy",
    "sober", "solid", "steady", "stormy", "sturdy", "sunny", "swift", "tall", "tame", "tender",
    "tidy", "tiny", "vivid", "warm", "wild", "windy", "wise", "witty", "young", "zesty",
)

NOUNS = (
    "acorn", "anchor", "apple", "arrow", "badger", "basket", "beacon", "bell", "bison", "boat",
    "bramble", "bridge", "brook", "bucket", "cabin", "candle", "canyon", "castle", "cedar",
    "comet", "coral", "cottage", "crane", "crystal", "daisy", "desert", "dolphin", "drum", "eagle",
    "ember", "falcon", "feather", "fern", "fiddle", "forest", "fountain", "fox", "garden",
    "glacier", "goose", "granite", "harbor", "hazel", "heron", "hill", "island", "jasmine",
    "kettle", "kite", "ladder", "lantern", "lemon", "lily", "maple", "meadow", "mirror",
    "mountain", "needle", "nest", "oak", "ocean", "orchard", "otter", "owl", "paddle", "pebble",
    "pepper", "pine", "planet", "pond", "quill", "rabbit", "raven", "reed", "ribbon", "river",
    "robin", "saddle", "salmon", "shell", "spoon", "sparrow", "spruce", "star", "stone", "summit",
    "teapot", "thistle", "thunder", "tiger", "torch", "tulip", "valley", "violin", "walnut",
    "whistle", "willow", "window", "wolf", "wren", "yarrow", "zebra",
)
# fmt: on

# Verbs for the word pool of the common-words task (with ADJECTIVES and NOUNS above).
# fmt: off
VERBS = (
    "accept", "admire", "arrive", "bake", "balance", "borrow", "bounce", "breathe", "build",
    "carry", "catch", "chase", "climb", "collect", "cook", "count", "crawl", "dance", "deliver",
    "describe", "dig", "drift", "earn", "enjoy", "explain", "explore", "fetch", "fold", "follow",
    "gather", "glow", "greet", "guard", "guess", "hammer", "hang", "help", "hop", "hurry",
    "imagine", "invent", "jog", "join", "juggle", "kneel", "knit", "laugh", "launch", "learn",
    "lift", "listen", "march", "measure", "melt", "mend", "mix", "nod", "notice", "offer", "open",
    "paint", "pause", "plant", "polish", "pour", "pretend", "pull", "push", "question", "race",
    "reach", "remember", "repair", "rest", "ripple", "roll", "sail", "scatter", "search", "sew",
    "shine", "shiver", "sing", "sketch", "skip", "sleep", "slide", "sniff", "sort", "sparkle",
    "spin", "splash", "squeeze", "stack", "stir", "stretch", "swim", "swing", "tap", "teach",
    "thank", "throw", "tickle", "travel", "trust", "tumble", "unfold", "vanish", "visit", "wander",
    "wash", "watch", "weave", "whisper", "wiggle", "wink", "wonder", "wrap", "write", "yawn",
    "yell", "zoom",
)
# fmt: on

# The noise haystack of RULER's niah_single_1 and vt: one line, repeated.
NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
