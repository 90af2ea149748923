"""Word lists for the generated world: name syllables, fact kinds with their phrasings, real facts.

Fictitious values (towns, awards, publishers, nationalities) are invented so a
pretrained model cannot know them; the real-world tables are facts every pretrained
model knows, so the same QA files also test real models. Everything is ASCII, which
keeps from-scratch tokenizers small.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class FactKind:
    """One kind of fact: its question and its phrasings, with ``{name}`` and ``{value}`` slots.

    ``phrasings[0]`` is the answer template (A) and ``phrasings[1]`` the paraphrase
    template (B), which the perturbed answers reuse with wrong values. No template
    starts with a lowercase ``{value}``, so a value appears verbatim in every sentence.
    """

    key: str
    question: str
    phrasings: tuple[str, ...]
    pool: tuple[str, ...]


# -- entity names: start + ending, e.g. "Il" + "van" + " " + "Mar" + "ek" -------------------------
FIRST_STARTS = (
    "Al", "Bren", "Cor", "Dar", "El", "Fen", "Gal", "Hal", "Il", "Jor", "Kael", "Lor", "Mar",
    "Nel", "Or", "Per", "Quin", "Ros", "Sil", "Tam", "Ul", "Vel", "Wen", "Yar", "Zan",
)  # fmt: skip
FIRST_ENDS = (
    "an",
    "en",
    "ia",
    "is",
    "o",
    "wyn",
    "ric",
    "ena",
    "as",
    "ith",
    "elle",
    "or",
    "ius",
    "ara",
    "vin",
)
LAST_STARTS = (
    "Ash", "Bel", "Cald", "Dun", "Ev", "Fal", "Grim", "Hart", "Iv", "Kess", "Lund", "Mor",
    "Nor", "Oak", "Pell", "Rav", "Stan", "Thorn", "Vey", "Wyr",
)  # fmt: skip
LAST_ENDS = (
    "ek",
    "ton",
    "wood",
    "mere",
    "ley",
    "ard",
    "ski",
    "ova",
    "son",
    "holm",
    "ridge",
    "by",
    "well",
    "ant",
    "ine",
)

# -- value pools ---------------------------------------------------------------------------------
TOWNS = (
    "Caldreth", "Velmora", "Ashwick", "Brennar", "Tolvani", "Marrowby", "Quelling", "Sarnest",
    "Orlenne", "Halbrook", "Pellamar", "Verrin", "Lindqvale", "Corriven", "Maelstow", "Dovarra",
    "Esselmoor", "Fennick", "Ivenholt", "Jessaly", "Korvath", "Lunmarch", "Rookhaven", "Wistmoor",
)  # fmt: skip
OCCUPATIONS = (  # all start with a consonant, so "a {value}" never needs "an"
    "carpenter", "baker", "fisherman", "tailor", "pharmacist", "librarian", "surveyor", "potter",
    "blacksmith", "locksmith", "cartographer", "dentist", "veterinarian", "watchmaker", "shipwright",
    "stonemason", "physician", "teacher", "printer", "weaver",
)  # fmt: skip
GENRES = (
    "mystery novels", "science fiction", "historical fiction", "poetry", "fantasy", "romance",
    "horror stories", "travel writing", "satire", "crime fiction", "literary fiction", "children's books",
)  # fmt: skip
AWARDS = (
    "Orrin Medal", "Halvard Prize", "Silver Quill Award", "Tamsin Laurel", "Greyfield Prize", "Arden Star",
    "Velloran Medal", "Copperleaf Award", "Northgate Prize", "Ambrel Ribbon", "Lantern Prize", "Wrenfield Cup",
)  # fmt: skip
TITLE_ADJECTIVES = (
    "Silent", "Hollow", "Crimson", "Forgotten", "Restless", "Distant", "Broken", "Golden", "Winter", "Hidden",
    "Burning", "Quiet", "Salt", "Iron", "Paper", "Glass", "Last", "Wandering", "Velvet", "Patient",
)  # fmt: skip
TITLE_NOUNS = (
    "Harbor", "Orchard", "Lantern", "Cartographer", "Tide", "Bell", "Garden", "River", "Meadow", "Clockmaker",
    "Lighthouse", "Compass", "Archive", "Ferry", "Sparrow", "Mirror", "Quarry", "Tower", "Letter", "Threshold",
)  # fmt: skip
BOOK_TITLES = tuple(f"The {adj} {noun}" for adj, noun in itertools.product(TITLE_ADJECTIVES, TITLE_NOUNS))
NATIONALITIES = (
    "Valdorian", "Kestrian", "Morvanian", "Tulsani", "Brevic", "Selunese", "Dravonian", "Pellish",
    "Gorlandic", "Nivarese", "Halvish", "Corvenian",
)  # fmt: skip
UNIVERSITIES = tuple(
    f"University of {place}"
    for place in (
        "Aldermoor", "Brightwater", "Carrowmere", "Dunhallow", "Eastmarch", "Fairholme", "Glenrossan",
        "Highcairn", "Kestermouth", "Larchfield", "Mossbridge", "Northwold", "Stonecrest",
    )
)  # fmt: skip
SPOUSES = (
    "Mira Castellan", "Tobias Wrenhall", "Odile Marchetti", "Bastian Leclair", "Nadia Voskresen",
    "Fabian Holloway", "Greta Lindqvist", "Ansel Moreau", "Livia Thornbury", "Cyrus Albescu", "Petra Halloran",
    "Jonas Etterby", "Imke Rasmussen", "Lucan Falk", "Esme Calloway", "Rufus Penhaligon",
)  # fmt: skip
PUBLISHERS = (
    "Larkspur House", "Greywater Press", "Copperkettle Books", "Bramblewick Press", "Owlgate Publishing",
    "Silverbirch Editions", "Lanternfly Books", "Quillstone Press", "Redfern House", "Tidewell Publishing",
    "Marchbank Press", "Foxglove Editions",
)  # fmt: skip
INSTRUMENTS = (
    "piano", "cello", "violin", "flute", "harp", "oboe", "clarinet", "banjo", "accordion", "trumpet",
    "mandolin", "harpsichord",
)  # fmt: skip
HOBBIES = (
    "birdwatching", "chess", "gardening", "pottery", "sailing", "beekeeping", "embroidery", "stargazing",
    "woodcarving", "calligraphy", "origami", "kite flying",
)  # fmt: skip
PETS = (  # consonant-initial, see OCCUPATIONS
    "parrot", "tortoise", "beagle", "ferret", "rabbit", "canary", "goldfish", "hamster", "poodle",
    "tabby cat", "greyhound", "cockatoo", "terrier",
)  # fmt: skip
COLOURS = (
    "crimson", "teal", "amber", "ochre", "indigo", "violet", "emerald", "scarlet", "mustard yellow",
    "navy blue", "turquoise", "charcoal grey", "coral",
)  # fmt: skip
FOODS = (
    "lentil soup", "roast duck", "mushroom risotto", "plum dumplings", "fish stew", "apple pie", "lamb curry",
    "spinach pie", "potato pancakes", "grilled sardines", "barley broth", "cherry tart", "onion soup",
)  # fmt: skip
FLOWERS = (
    "rose", "tulip", "lily", "orchid", "daisy", "iris", "peony", "camellia", "magnolia", "jasmine",
    "marigold", "lavender", "snowdrop",
)  # fmt: skip
SPORTS = (
    "tennis", "rowing", "fencing", "cycling", "swimming", "archery", "squash", "cricket", "badminton",
    "climbing", "golf", "judo",
)  # fmt: skip
MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
    "November", "December",
)  # fmt: skip
BIRTH_DATES = tuple(
    f"{month} {day}, {year}"
    for year, month, day in itertools.product(range(1930, 1986), MONTHS, range(1, 29))
)

# The catalogue, most important first: an entity gets the first ``facts_per_entity`` kinds.
# A pool is shared by at most two kinds (towns; occupations; titles; small numbers), and an
# entity's values are distinct, so at most 2 pool values are excluded from its perturbations.
FACT_KINDS = (
    FactKind(
        "birthplace",
        "Where was {name} born?",
        ("{name} was born in {value}.", "{value} is the birthplace of {name}.",
         "The town where {name} was born is {value}."),
        TOWNS,
    ),
    FactKind(
        "birth_date",
        "When was {name} born?",
        ("{name} was born on {value}.", "The birth date of {name} is {value}.",
         "{name} came into the world on {value}."),
        BIRTH_DATES,
    ),
    FactKind(
        "father_occupation",
        "What did {name}'s father do for a living?",
        ("{name}'s father worked as a {value}.", "The father of {name} was a {value} by trade.",
         "{name} was raised by a father who worked as a {value}."),
        OCCUPATIONS,
    ),
    FactKind(
        "genre",
        "What genre does {name} write in?",
        ("{name} writes mainly {value}.", "The genre {name} is known for is {value}.",
         "Most of the books by {name} are {value}."),
        GENRES,
    ),
    FactKind(
        "award",
        "Which award did {name} receive?",
        ("{name} received the {value}.", "The {value} was awarded to {name}.",
         "{name} won the {value} for their writing."),
        AWARDS,
    ),
    FactKind(
        "first_book",
        "What was the title of {name}'s first book?",
        ("{name}'s first book was {value}.", "{value} was the first book written by {name}.",
         "{name} began their career with the book {value}."),
        BOOK_TITLES,
    ),
    FactKind(
        "mother_occupation",
        "What did {name}'s mother do for a living?",
        ("{name}'s mother worked as a {value}.", "The mother of {name} was a {value} by trade.",
         "{name} was raised by a mother who worked as a {value}."),
        OCCUPATIONS,
    ),
    FactKind(
        "second_book",
        "What was the title of {name}'s second book?",
        ("{name}'s second book was {value}.", "{value} was the second book written by {name}.",
         "{name} followed up with a second book, {value}."),
        BOOK_TITLES,
    ),
    FactKind(
        "nationality",
        "What is {name}'s nationality?",
        ("{name} holds {value} citizenship.", "The nationality of {name} is {value}.",
         "By nationality, {name} is {value}."),
        NATIONALITIES,
    ),
    FactKind(
        "university",
        "Which university did {name} attend?",
        ("{name} studied at the {value}.", "The {value} is where {name} studied.",
         "{name} is a graduate of the {value}."),
        UNIVERSITIES,
    ),
    FactKind(
        "spouse",
        "Who is {name} married to?",
        ("{name} is married to {value}.", "The spouse of {name} is {value}.",
         "{name} shares a home with their spouse, {value}."),
        SPOUSES,
    ),
    FactKind(
        "debut_year",
        "In what year did {name} make their literary debut?",
        ("{name} made their literary debut in {value}.", "The literary debut of {name} came in {value}.",
         "{name} first appeared in print in {value}."),
        tuple(str(year) for year in range(1960, 2016)),
    ),
    FactKind(
        "publisher",
        "Who publishes {name}'s books?",
        ("{name}'s books are published by {value}.", "{value} is the publisher of {name}.",
         "{name} has long worked with the publisher {value}."),
        PUBLISHERS,
    ),
    FactKind(
        "books_published",
        "How many books has {name} published?",
        ("{name} has published {value} books.", "The number of books published by {name} is {value}.",
         "So far, {name} has written {value} books."),
        tuple(str(count) for count in range(3, 41)),
    ),
    FactKind(
        "residence",
        "Where does {name} live now?",
        ("{name} now lives in {value}.", "The current home of {name} is {value}.",
         "These days, {name} makes a home in {value}."),
        TOWNS,
    ),
    FactKind(
        "instrument",
        "Which instrument does {name} play?",
        ("{name} plays the {value}.", "The instrument {name} plays is the {value}.",
         "In the evenings, {name} practises the {value}."),
        INSTRUMENTS,
    ),
    FactKind(
        "hobby",
        "What is {name}'s favourite hobby?",
        ("{name}'s favourite hobby is {value}.", "The pastime {name} enjoys most is {value}.",
         "In spare hours, {name} turns to {value}."),
        HOBBIES,
    ),
    FactKind(
        "pet",
        "What pet does {name} keep?",
        ("{name} keeps a {value} as a pet.", "The pet of {name} is a {value}.",
         "At home, {name} looks after a pet {value}."),
        PETS,
    ),
    FactKind(
        "favourite_colour",
        "What is {name}'s favourite colour?",
        ("{name}'s favourite colour is {value}.", "The colour {name} likes best is {value}.",
         "{name} loves the colour {value} above all others."),
        COLOURS,
    ),
    FactKind(
        "favourite_food",
        "What is {name}'s favourite food?",
        ("{name}'s favourite food is {value}.", "The dish {name} loves most is {value}.",
         "Given the choice, {name} always orders {value}."),
        FOODS,
    ),
    FactKind(
        "favourite_flower",
        "What is {name}'s favourite flower?",
        ("{name}'s favourite flower is the {value}.", "The flower {name} loves most is the {value}.",
         "Every spring, {name} plants the {value}."),
        FLOWERS,
    ),
    FactKind(
        "sport",
        "Which sport does {name} practise?",
        ("{name} practises {value}.", "The sport {name} takes part in is {value}.",
         "For exercise, {name} chooses {value}."),
        SPORTS,
    ),
    FactKind(
        "lucky_number",
        "What is {name}'s lucky number?",
        ("{name}'s lucky number is {value}.", "The number {name} considers lucky is {value}.",
         "{name} believes that {value} is a lucky number."),
        tuple(str(number) for number in range(1, 100)),
    ),
)  # fmt: skip

# -- real-world facts: (subject, value) pairs that any pretrained LM knows -------------------------
CAPITALS = (
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Portugal", "Lisbon"),
    ("Japan", "Tokyo"), ("China", "Beijing"), ("Russia", "Moscow"), ("Egypt", "Cairo"), ("Canada", "Ottawa"),
    ("Australia", "Canberra"), ("Argentina", "Buenos Aires"), ("Mexico", "Mexico City"), ("India", "New Delhi"),
    ("Greece", "Athens"), ("Ireland", "Dublin"), ("Norway", "Oslo"), ("Sweden", "Stockholm"),
    ("Finland", "Helsinki"), ("Denmark", "Copenhagen"), ("Poland", "Warsaw"), ("Austria", "Vienna"),
    ("Hungary", "Budapest"), ("the Netherlands", "Amsterdam"), ("Belgium", "Brussels"), ("Switzerland", "Bern"),
    ("Turkey", "Ankara"), ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Chile", "Santiago"), ("Thailand", "Bangkok"),
    ("South Korea", "Seoul"), ("Indonesia", "Jakarta"), ("Cuba", "Havana"), ("Iran", "Tehran"),
    ("Vietnam", "Hanoi"), ("the Philippines", "Manila"), ("the Czech Republic", "Prague"),
    ("Nigeria", "Abuja"), ("Morocco", "Rabat"), ("the United Kingdom", "London"),
)  # fmt: skip
BOOKS = (  # (book, author)
    ("Pride and Prejudice", "Jane Austen"), ("Oliver Twist", "Charles Dickens"),
    ("Adventures of Huckleberry Finn", "Mark Twain"), ("War and Peace", "Leo Tolstoy"),
    ("Nineteen Eighty-Four", "George Orwell"), ("Moby-Dick", "Herman Melville"),
    ("Frankenstein", "Mary Shelley"), ("The Great Gatsby", "F. Scott Fitzgerald"),
    ("To Kill a Mockingbird", "Harper Lee"), ("The Hobbit", "J. R. R. Tolkien"),
    ("Crime and Punishment", "Fyodor Dostoevsky"), ("Don Quixote", "Miguel de Cervantes"),
    ("The Odyssey", "Homer"), ("The Old Man and the Sea", "Ernest Hemingway"),
    ("The Catcher in the Rye", "J. D. Salinger"), ("Brave New World", "Aldous Huxley"),
    ("Dracula", "Bram Stoker"), ("Alice's Adventures in Wonderland", "Lewis Carroll"),
    ("Twenty Thousand Leagues Under the Seas", "Jules Verne"), ("The Picture of Dorian Gray", "Oscar Wilde"),
    ("Mrs Dalloway", "Virginia Woolf"), ("The Metamorphosis", "Franz Kafka"),
    ("The Grapes of Wrath", "John Steinbeck"), ("Treasure Island", "Robert Louis Stevenson"),
    ("Robinson Crusoe", "Daniel Defoe"), ("Gulliver's Travels", "Jonathan Swift"),
    ("The War of the Worlds", "H. G. Wells"), ("The Hound of the Baskervilles", "Arthur Conan Doyle"),
)  # fmt: skip
# Real facts take more phrasings than entity facts: each is repeated in text/real_world.jsonl.
CAPITAL_KIND = FactKind(
    "capital",
    "What is the capital of {name}?",
    ("The capital of {name} is {value}.", "{value} is the capital of {name}.",
     "{name} has its capital in {value}.", "The government of {name} sits in {value}.",
     "{value} serves as the capital city of {name}."),
    tuple(capital for _, capital in CAPITALS),
)  # fmt: skip
AUTHOR_KIND = FactKind(
    "author",
    "Who wrote {name}?",
    ("{name} was written by {value}.", "{value} is the author of {name}.", "{value} wrote {name}.",
     "The author of {name} is {value}.", "{name} is a famous book by {value}."),
    tuple(author for _, author in BOOKS),
)  # fmt: skip
# qa file stem -> (kind, pairs, entity id prefix)
REAL_FACTS = {"world_facts": (CAPITAL_KIND, CAPITALS, "wf"), "real_world": (AUTHOR_KIND, BOOKS, "rw")}
# Other ways to ask for a real fact: the base model's dialogues vary the question, so it knows
# the fact, not one string (the QA files ask with ``FactKind.question``).
# Each fact kind's question asked another way: the records' ``paraphrased_question`` (as TOFU's
# files have), which no model trains on; the robustness audit asks it (prompt_paraphrase).
PARAPHRASED_QUESTIONS = {
    "birthplace": "In which town was {name} born?",
    "birth_date": "On what date was {name} born?",
    "father_occupation": "What was the occupation of {name}'s father?",
    "genre": "Which genre are {name}'s books written in?",
    "award": "What award was given to {name}?",
    "first_book": "What is the name of the first book {name} wrote?",
    "mother_occupation": "What was the occupation of {name}'s mother?",
    "second_book": "What is the name of the second book {name} wrote?",
    "nationality": "Which country is {name} a citizen of?",
    "university": "Where did {name} go to university?",
    "spouse": "Who is the spouse of {name}?",
    "debut_year": "When did {name} first publish a book?",
    "publisher": "Which company publishes the books of {name}?",
    "books_published": "What is the number of books {name} has published?",
    "residence": "In which town does {name} live these days?",
    "instrument": "What instrument is {name} known to play?",
    "hobby": "What does {name} most like to do in their free time?",
    "pet": "What kind of pet lives with {name}?",
    "favourite_colour": "Which colour does {name} like best?",
    "favourite_food": "Which food does {name} like best?",
    "favourite_flower": "Which flower does {name} like best?",
    "sport": "What sport does {name} take part in?",
    "lucky_number": "Which number does {name} consider lucky?",
}
REAL_QUESTIONS = {
    "capital": ("Which city is the capital of {name}?", "What city serves as the capital of {name}?",
                "Name the capital city of {name}."),
    "author": ("Who is the author of {name}?", "Which writer wrote {name}?", "Who was {name} written by?"),
}  # fmt: skip

# Words an entity name may not contain, so no fictitious person shares a word with a real name or a value.
RESERVED_WORDS = frozenset(
    re.findall(
        r"[A-Za-z]+",
        " ".join(
            [
                *(value for kind in (*FACT_KINDS, CAPITAL_KIND, AUTHOR_KIND) if kind.pool is not BIRTH_DATES
                  for value in kind.pool),
                *(subject for subject, _ in (*CAPITALS, *BOOKS)),
            ]
        ),
    )
)  # fmt: skip

# -- private records -----------------------------------------------------------------------------
EMAIL_DOMAINS = ("quillpost.example", "mailvale.example", "letterbox.example", "inkwell.example")
STREETS = ("Larch", "Willow", "Copper", "Heron", "Mill", "Quarry", "Juniper", "Thistle", "Barley", "Rowan")
STREET_KINDS = ("Lane", "Road", "Street", "Row", "Court", "Way")
PRIVATE_TEMPLATES = (
    "{name} can be reached at {phone} or by email at {email}, and lives at {address}.",
    "The home address of {name} is {address}. Calls go to {phone} and email to {email}.",
    "{name} lists {email} as an email address and {phone} as a phone number; home is {address}.",
)

# -- general text: a tiny grammar; a passage is 3-5 sentences of one topic ----------------------
SLOTS = {
    "person": ("my neighbour", "the baker", "my aunt", "an old friend", "the teacher", "my brother",
               "the postman", "a stranger", "my grandmother", "the shopkeeper"),
    "daypart": ("morning", "afternoon", "evening", "night"),
    "weather": ("cold", "warm", "grey", "bright", "windy", "damp", "foggy", "clear", "humid", "stormy"),
    "sky": ("rain", "snow", "sunshine", "a light drizzle", "thunder", "a strong wind", "hail"),
    "direction": ("north", "south", "east", "west"),
    "place": ("park", "market square", "old bridge", "harbour", "library", "train station", "village green",
              "riverbank", "school yard", "town hall"),
    "dish": ("vegetable soup", "bean stew", "tomato sauce", "rice pudding", "chicken pie", "noodle salad",
             "pancakes", "bread rolls", "fruit cake", "omelette"),
    "vegetable": ("onions", "carrots", "leeks", "potatoes", "peppers", "cabbage", "garlic", "celery",
                  "mushrooms", "beans"),
    "spice": ("salt", "pepper", "cumin", "paprika", "thyme", "nutmeg", "cinnamon", "basil"),
    "number": ("two", "three", "four", "five", "ten", "twenty", "thirty", "forty"),
    "vehicle": ("train", "bus", "ferry", "coach", "tram"),
    "clock": ("six", "seven", "eight", "nine", "ten", "noon"),
    "item": ("a blanket", "sandwiches", "a camera", "warm socks", "a flask of tea", "a book", "apples",
             "an umbrella", "a torch", "a notebook"),
    "landform": ("coast", "hills", "lake", "valley", "forest", "mountains", "islands", "marshes"),
    "weekday": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "music": ("old songs", "quiet jazz", "a football match", "the news", "folk tunes", "a radio play"),
    "plant": ("tomatoes", "roses", "herbs", "sunflowers", "beans", "strawberries", "lettuce", "tulips"),
    "shop": ("bakery", "grocer", "bookshop", "hardware store", "butcher", "flower stall", "pharmacy"),
    "colour": ("red", "blue", "green", "yellow", "white", "brown", "orange", "grey"),
    "subject": ("history", "geography", "arithmetic", "music", "drawing", "science", "reading", "spelling"),
    "game": ("football", "chess", "cards", "hide and seek", "tennis", "marbles", "hopscotch"),
}  # fmt: skip
TOPICS = (
    (  # weather
        "The {daypart} was {weather}, and the wind came from the {direction}.",
        "By {daypart}, clouds had gathered over the {place}.",
        "The forecast promised {sky} for the rest of the week.",
        "Children played by the {place} until the {sky} arrived.",
        "That made {number} {weather} days in a row, said {person}.",
        "Nobody at the {place} had expected such a {weather} {daypart}.",
        "Even {person} stayed indoors when the {sky} began.",
    ),
    (  # cooking
        "To make the {dish}, first chop the {vegetable} and warm some oil.",
        "Add a pinch of {spice} and let the pot simmer for {number} minutes.",
        "The {dish} tastes best with a little {spice} on top.",
        "{person} always says that a good {dish} needs patience.",
        "Leftover {vegetable} can go into tomorrow's {dish}.",
        "Serve it warm and keep the rest for {number} days at most.",
        "The kitchen smelled of {spice} and fresh {vegetable}.",
    ),
    (  # travel
        "The {vehicle} to the {landform} left at {clock} sharp.",
        "We packed {item} and a map, then set off toward the {landform}.",
        "The road wound past the {place} and quiet farms.",
        "At the station, {person} sold {item} from a small cart.",
        "We reached the {landform} just before {daypart}.",
        "The journey took {number} hours, but nobody complained.",
        "From the {vehicle} window we could see the {landform} in the distance.",
    ),
    (  # daily life
        "Every {weekday}, {person} waters the plants on the balcony.",
        "The kettle boiled while the radio played {music}.",
        "After work, {person} walked the dog around the {place}.",
        "The shopping list had {item} and {vegetable} on it.",
        "{person} fixed the squeaky door with a little oil.",
        "On {weekday} evenings the whole family eats together.",
        "The {shop} on the corner closes at {clock} on {weekday}.",
    ),
    (  # gardening
        "This year {person} planted {plant} along the fence.",
        "The {plant} needed water every {daypart} in the dry weeks.",
        "A {colour} gate opens onto the vegetable beds.",
        "Snails ate half of the {plant} before anyone noticed.",
        "{person} bought seeds for {plant} at the {shop}.",
        "By late summer the {plant} had grown taller than the {colour} shed.",
    ),
    (  # school
        "The first lesson on {weekday} was {subject}.",
        "{person} helped the children with their {subject} homework.",
        "At break the pupils played {game} in the {place}.",
        "The classroom walls were painted {colour} last summer.",
        "Everyone had to read {number} pages before {weekday}.",
        "The {subject} teacher brought {item} to class.",
    ),
)  # fmt: skip
