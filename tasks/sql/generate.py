"""Deterministic generator of the sql suite (v1). Run: python tasks/sql/generate.py

Every task carries its own small database (``db``: tables, declared columns and rows) in one of
four themes: a shop (customers, products, orders), a school (students, courses, enrollments), a
library (authors, books, members, loans) and a company (departments, employees, projects).
Per user request it stores the oracle's SQL (``queries``; the answer is in the first column),
the tables the oracle describes before querying (``describe``) and the expected answer
(``answers``: ``{"kind": "number", "value": x}`` or ``{"kind": "names", "items": [...],
"exclude": [...]}``), computed here by running that SQL on the task's database.

Difficulty 1: the request lists the schema; one single-table query, then the answer (2 turns).
Difficulty 2: no schema given; describe the table(s), then one query (often a join or a
              grouped aggregate), then the answer (3 turns).
Difficulty 3: two or three requests in one episode: a set of rows ("How many customers live in
              Porto?"), then "Which of them ...?", then a question about that one (6-8 turns).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from agentopd.envs.suites import write_splits
from agentopd.tools.sql import SQLDatabase

VERSION = 1
COUNTS = {"train": 300, "test": 100}
SEEDS = {"train": 3001, "test": 4002}
SHARES = {1: 0.35, 2: 0.35, 3: 0.30}
MAX_TURNS = 8

FIRST = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goran", "Hana", "Ivo", "Jun", "Kofi",
         "Lena", "Marco", "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tara", "Uma",
         "Victor", "Wen", "Yara", "Zoe", "Aaron", "Bianca", "Diego", "Elena", "Farid"]
LAST = ["Silva", "Costa", "Novak", "Kim", "Okafor", "Rossi", "Haddad", "Tanaka", "Berg",
        "Moreau", "Ivanova", "Lopez", "Nguyen", "Schmidt", "Patel", "Duarte", "Keller",
        "Mendes", "Sato", "Walsh"]
CITIES = ["Porto", "Lisbon", "Madrid", "Berlin", "Oslo", "Vienna", "Dublin", "Prague"]
PRODUCTS = [("Headphones", "Electronics"), ("Keyboard", "Electronics"), ("Webcam", "Electronics"),
            ("Monitor", "Electronics"), ("Charger", "Electronics"), ("Speaker", "Electronics"),
            ("Kettle", "Kitchen"), ("Toaster", "Kitchen"), ("Blender", "Kitchen"),
            ("Teapot", "Kitchen"), ("Skillet", "Kitchen"), ("Stapler", "Office"),
            ("Notebook", "Office"), ("Planner", "Office"), ("Binder", "Office"),
            ("Shovel", "Garden"), ("Hose", "Garden"), ("Planter", "Garden"), ("Rake", "Garden")]
MAJORS = ["Biology", "History", "Physics", "Economics", "Music"]
COURSES = [("Algebra", "Mathematics"), ("Calculus", "Mathematics"), ("Statistics", "Mathematics"),
           ("Genetics", "Biology"), ("Ecology", "Biology"), ("Poetry", "Literature"),
           ("Drama", "Literature"), ("Mechanics", "Physics"), ("Optics", "Physics"),
           ("Ancient Rome", "History"), ("Modern Europe", "History"), ("Harmony", "Music"),
           ("Composition", "Music")]
COUNTRIES = ["Brazil", "Canada", "Japan", "Nigeria", "Norway", "Chile", "India", "Ireland"]
GENRES = ["Mystery", "Fantasy", "Travel", "Poetry", "Science"]
TITLES = ["The Silent River", "Glass Mountains", "Winter Orchard", "The Last Lighthouse",
          "Paper Moons", "Iron Garden", "Northern Lights", "The Salt Road", "Copper Sky",
          "Hidden Harbor", "Amber Fields", "The Long Shadow", "Quiet Storm", "Falling Stars",
          "Velvet Night", "Broken Compass", "Crimson Tide", "Distant Shores", "Emerald Gate",
          "Frozen Echo"]
DEPARTMENTS = ["Sales", "Engineering", "Marketing", "Finance", "Support", "Research", "Legal",
               "Design"]
PROJECTS = ["Apollo", "Borealis", "Cascade", "Delta", "Everest", "Falcon", "Granite", "Horizon",
            "Iris", "Juniper", "Kestrel", "Lumen"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]

PK = "INTEGER PRIMARY KEY"


def _ref(table: str) -> str:
    return f"INTEGER REFERENCES {table}(id)"


def _table(name: str, columns: list[tuple[str, str]], rows: list[list]) -> dict:
    return {"name": name, "columns": [list(c) for c in columns], "rows": rows}


def _people(r: random.Random, n: int) -> list[str]:
    pairs = r.sample([(f, s) for f in FIRST for s in LAST], n)
    return [f"{f} {s}" for f, s in pairs]


def _date(r: random.Random) -> str:
    return f"{r.choice([2023, 2024])}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"


# ---- databases ----------------------------------------------------------------------------
def shop_db(r: random.Random) -> list[dict]:
    names = _people(r, r.randint(10, 18))
    cities = r.sample(CITIES, r.randint(3, 5))
    customers = [[i + 1, n, r.choice(cities), r.randint(2018, 2024)] for i, n in enumerate(names)]
    products = [[i + 1, n, c, r.randint(300, 25000) / 100]
                for i, (n, c) in enumerate(r.sample(PRODUCTS, r.randint(8, 14)))]
    orders = sorted([r.randint(1, len(customers)), r.randint(1, len(products)), r.randint(1, 5), _date(r)]
                    for _ in range(r.randint(20, 50)))
    orders.sort(key=lambda o: o[3])
    return [
        _table("customers", [("id", PK), ("name", "TEXT"), ("city", "TEXT"), ("signup_year", "INTEGER")], customers),
        _table("products", [("id", PK), ("name", "TEXT"), ("category", "TEXT"), ("price", "REAL")], products),
        _table("orders", [("id", PK), ("customer_id", _ref("customers")), ("product_id", _ref("products")),
                          ("quantity", "INTEGER"), ("order_date", "TEXT")],
               [[i + 1, *o] for i, o in enumerate(orders)]),
    ]


def school_db(r: random.Random) -> list[dict]:
    names = _people(r, r.randint(10, 18))
    majors = r.sample(MAJORS, r.randint(3, 5))
    students = [[i + 1, n, r.choice(majors), r.randint(1, 4)] for i, n in enumerate(names)]
    courses = [[i + 1, t, d, r.choice([2, 3, 4, 5, 6])]
               for i, (t, d) in enumerate(r.sample(COURSES, r.randint(6, 10)))]
    enrollments: list[list] = []
    for s in students:
        for c in r.sample(courses, r.randint(2, 4)):
            if len(enrollments) < 60:
                enrollments.append([len(enrollments) + 1, s[0], c[0], r.randint(45, 100)])
    return [
        _table("students", [("id", PK), ("name", "TEXT"), ("major", "TEXT"), ("year", "INTEGER")], students),
        _table("courses", [("id", PK), ("title", "TEXT"), ("department", "TEXT"), ("credits", "INTEGER")], courses),
        _table("enrollments", [("id", PK), ("student_id", _ref("students")), ("course_id", _ref("courses")),
                               ("grade", "INTEGER")], enrollments),
    ]


def library_db(r: random.Random) -> list[dict]:
    n_authors, n_members = r.randint(5, 8), r.randint(8, 12)
    people = _people(r, n_authors + n_members)
    countries = r.sample(COUNTRIES, r.randint(3, 5))
    authors = [[i + 1, n, r.choice(countries)] for i, n in enumerate(people[:n_authors])]
    genres = r.sample(GENRES, r.randint(3, 5))
    books = [[i + 1, t, r.randint(1, n_authors), r.choice(genres), r.randint(1950, 2023), r.randint(120, 800)]
             for i, t in enumerate(r.sample(TITLES, r.randint(10, 16)))]
    cities = r.sample(CITIES, r.randint(2, 4))
    members = [[i + 1, n, r.choice(cities)] for i, n in enumerate(people[n_authors:])]
    loans = sorted(([r.randint(1, len(books)), r.randint(1, n_members), _date(r), r.randint(1, 30)]
                    for _ in range(r.randint(20, 40))), key=lambda x: x[2])
    return [
        _table("authors", [("id", PK), ("name", "TEXT"), ("country", "TEXT")], authors),
        _table("books", [("id", PK), ("title", "TEXT"), ("author_id", _ref("authors")), ("genre", "TEXT"),
                         ("published_year", "INTEGER"), ("pages", "INTEGER")], books),
        _table("members", [("id", PK), ("name", "TEXT"), ("city", "TEXT")], members),
        _table("loans", [("id", PK), ("book_id", _ref("books")), ("member_id", _ref("members")),
                         ("loan_date", "TEXT"), ("days_kept", "INTEGER")],
               [[i + 1, *x] for i, x in enumerate(loans)]),
    ]


def company_db(r: random.Random) -> list[dict]:
    cities = r.sample(CITIES, 3)
    departments = [[i + 1, d, r.choice(cities)] for i, d in enumerate(r.sample(DEPARTMENTS, r.randint(5, 7)))]
    employees = [[i + 1, n, r.randint(1, len(departments)), r.randint(30, 150) * 1000, r.randint(2010, 2024)]
                 for i, n in enumerate(_people(r, r.randint(15, 30)))]
    projects = [[i + 1, p, r.randint(1, len(departments)), r.randint(10, 500) * 1000]
                for i, p in enumerate(r.sample(PROJECTS, r.randint(6, 12)))]
    return [
        _table("departments", [("id", PK), ("name", "TEXT"), ("city", "TEXT")], departments),
        _table("employees", [("id", PK), ("name", "TEXT"), ("department_id", _ref("departments")),
                             ("salary", "INTEGER"), ("hire_year", "INTEGER")], employees),
        _table("projects", [("id", PK), ("name", "TEXT"), ("department_id", _ref("departments")),
                            ("budget", "INTEGER")], projects),
    ]


# ---- question templates -------------------------------------------------------------------
@dataclass(frozen=True)
class T:
    """One question template. ``kind``: number | names | top (a ranking: name, metric)."""

    text: str
    sql: str
    kind: str
    tables: tuple[str, ...]
    domain: str | None = None
    """SQL listing every candidate answer, for names/top (the others become ``exclude``)."""
    params: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """placeholder -> (table, column) to pick a value from, or (table, column, "cut"|"month")."""


def t(text, sql, kind, tables, domain=None, **params) -> T:
    return T(text, sql, kind, tuple(tables.split()), domain, params)


@dataclass(frozen=True)
class Entity:
    """What difficulty-3 episodes are about: a set of rows, the top one of them, a fact about it."""

    noun: str
    table: str
    alias: str
    filters: tuple[tuple[str, str, dict], ...]
    """(phrase after "How many <plural>", SQL predicate, params)."""
    metrics: tuple[tuple[str, str, str, tuple[str, ...]], ...]
    """(phrase after "Which of them", SQL aggregate, JOIN clause, tables it needs)."""
    facts: tuple[T, ...]
    """Follow-ups about the top row, with ``{name}`` for its name."""


SPENT = "JOIN customers c ON c.id = o.customer_id JOIN products p ON p.id = o.product_id"
SHOP = dict(
    simple=[
        t("How many customers are there?", "SELECT COUNT(*) FROM customers", "number", "customers"),
        t("How many customers live in {city}?", "SELECT COUNT(*) FROM customers WHERE city = '{city}'",
          "number", "customers", city=("customers", "city")),
        t("How many customers signed up in {year} or later?",
          "SELECT COUNT(*) FROM customers WHERE signup_year >= {year}", "number", "customers",
          year=("customers", "signup_year")),
        t("How many products cost more than ${price}?", "SELECT COUNT(*) FROM products WHERE price > {price}",
          "number", "products", price=("products", "price", "cut")),
        t("What is the average price of the products in the {category} category, in dollars rounded to 2 decimal places?",
          "SELECT ROUND(AVG(price), 2) FROM products WHERE category = '{category}'", "number", "products",
          category=("products", "category")),
        t("Which product is the most expensive? Give its name.",
          "SELECT name, price FROM products ORDER BY price DESC", "top", "products", "SELECT name FROM products"),
        t("List the names of the customers who live in {city}.",
          "SELECT name FROM customers WHERE city = '{city}' ORDER BY name", "names", "customers",
          "SELECT name FROM customers", city=("customers", "city")),
        t("How many units were ordered in total, summed over all orders?", "SELECT SUM(quantity) FROM orders",
          "number", "orders"),
        t("How many orders have a quantity of at least {qty}?",
          "SELECT COUNT(*) FROM orders WHERE quantity >= {qty}", "number", "orders", qty=("orders", "quantity")),
        t("List the names of the products in the {category} category.",
          "SELECT name FROM products WHERE category = '{category}' ORDER BY name", "names", "products",
          "SELECT name FROM products", category=("products", "category")),
    ],
    joined=[
        t("How many orders were placed by customers who live in {city}?",
          "SELECT COUNT(*) FROM orders o JOIN customers c ON c.id = o.customer_id WHERE c.city = '{city}'",
          "number", "customers orders", city=("customers", "city")),
        t("What is the total revenue from products in the {category} category, that is quantity times price "
          "summed over their orders? Give dollars rounded to 2 decimal places.",
          "SELECT ROUND(SUM(o.quantity * p.price), 2) FROM orders o JOIN products p ON p.id = o.product_id "
          "WHERE p.category = '{category}'", "number", "orders products", category=("products", "category")),
        t("Which customer has placed the most orders? Give the name.",
          "SELECT c.name, COUNT(*) AS n FROM orders o JOIN customers c ON c.id = o.customer_id "
          "GROUP BY c.id ORDER BY n DESC", "top", "customers orders", "SELECT name FROM customers"),
        t("List the names of the customers who have ordered the product {product}.",
          "SELECT DISTINCT c.name FROM orders o " + SPENT + " WHERE p.name = '{product}' ORDER BY c.name",
          "names", "customers orders products", "SELECT name FROM customers", product=("products", "name")),
        t("Which product has sold the most units in total? Give its name.",
          "SELECT p.name, SUM(o.quantity) AS units FROM orders o JOIN products p ON p.id = o.product_id "
          "GROUP BY p.id ORDER BY units DESC", "top", "orders products", "SELECT name FROM products"),
        t("How many different customers have ordered at least one product from the {category} category?",
          "SELECT COUNT(DISTINCT o.customer_id) FROM orders o JOIN products p ON p.id = o.product_id "
          "WHERE p.category = '{category}'", "number", "orders products", category=("products", "category")),
        t("How many orders were placed in {month_label}?",
          "SELECT COUNT(*) FROM orders WHERE order_date LIKE '{month}-%'", "number", "orders",
          month=("orders", "order_date", "month")),
        t("Customers from which city have spent the most money in total (quantity times price over all "
          "their orders)? Give the city.",
          "SELECT c.city, SUM(o.quantity * p.price) AS total FROM orders o " + SPENT +
          " GROUP BY c.city ORDER BY total DESC", "top", "customers orders products",
          "SELECT DISTINCT city FROM customers"),
        t("How much has {customer} spent in total (quantity times price over all their orders)? Give "
          "dollars rounded to 2 decimal places.",
          "SELECT ROUND(SUM(o.quantity * p.price), 2) FROM orders o " + SPENT + " WHERE c.name = '{customer}'",
          "number", "customers orders products", customer=("customers", "name")),
    ],
    entity=Entity(
        "customer", "customers", "c",
        filters=(("live in {city}", "c.city = '{city}'", {"city": ("customers", "city")}),
                 ("signed up in {year} or later", "c.signup_year >= {year}",
                  {"year": ("customers", "signup_year")})),
        metrics=(("placed the most orders", "COUNT(o.id)", "JOIN orders o ON o.customer_id = c.id", ("orders",)),
                 ("spent the most money in total (quantity times price over all their orders)",
                  "SUM(o.quantity * p.price)",
                  "JOIN orders o ON o.customer_id = c.id JOIN products p ON p.id = o.product_id",
                  ("orders", "products")),
                 ("ordered the most units in total", "SUM(o.quantity)", "JOIN orders o ON o.customer_id = c.id",
                  ("orders",))),
        facts=(t("How many orders has that customer placed?",
                 "SELECT COUNT(*) FROM orders o JOIN customers c ON c.id = o.customer_id WHERE c.name = '{name}'",
                 "number", "customers orders"),
               t("How much has that customer spent in total, in dollars rounded to 2 decimal places?",
                 "SELECT ROUND(SUM(o.quantity * p.price), 2) FROM orders o " + SPENT + " WHERE c.name = '{name}'",
                 "number", "customers orders products"),
               t("Which product category has that customer spent the most money on? Give the category.",
                 "SELECT p.category, SUM(o.quantity * p.price) AS total FROM orders o " + SPENT +
                 " WHERE c.name = '{name}' GROUP BY p.category ORDER BY total DESC", "top",
                 "customers orders products", "SELECT DISTINCT category FROM products")),
    ),
)

ENROLLED = "JOIN students s ON s.id = e.student_id JOIN courses co ON co.id = e.course_id"
SCHOOL = dict(
    simple=[
        t("How many students are there?", "SELECT COUNT(*) FROM students", "number", "students"),
        t("How many students major in {major}?", "SELECT COUNT(*) FROM students WHERE major = '{major}'",
          "number", "students", major=("students", "major")),
        t("How many students are in year {year}?", "SELECT COUNT(*) FROM students WHERE year = {year}",
          "number", "students", year=("students", "year")),
        t("How many courses are worth at least {credits} credits?",
          "SELECT COUNT(*) FROM courses WHERE credits >= {credits}", "number", "courses",
          credits=("courses", "credits")),
        t("What is the highest grade recorded in any enrollment?", "SELECT MAX(grade) FROM enrollments",
          "number", "enrollments"),
        t("What is the average grade over all enrollments, rounded to 2 decimal places?",
          "SELECT ROUND(AVG(grade), 2) FROM enrollments", "number", "enrollments"),
        t("List the titles of the courses offered by the {department} department.",
          "SELECT title FROM courses WHERE department = '{department}' ORDER BY title", "names", "courses",
          "SELECT title FROM courses", department=("courses", "department")),
        t("List the names of the students who major in {major}.",
          "SELECT name FROM students WHERE major = '{major}' ORDER BY name", "names", "students",
          "SELECT name FROM students", major=("students", "major")),
        t("How many enrollments have a grade below {grade}?",
          "SELECT COUNT(*) FROM enrollments WHERE grade < {grade}", "number", "enrollments",
          grade=("enrollments", "grade", "cut")),
    ],
    joined=[
        t("How many students are enrolled in {title}?",
          "SELECT COUNT(*) FROM enrollments e JOIN courses co ON co.id = e.course_id WHERE co.title = '{title}'",
          "number", "courses enrollments", title=("courses", "title")),
        t("What is the average grade in {title}, rounded to 2 decimal places?",
          "SELECT ROUND(AVG(e.grade), 2) FROM enrollments e JOIN courses co ON co.id = e.course_id "
          "WHERE co.title = '{title}'", "number", "courses enrollments", title=("courses", "title")),
        t("Which student has the highest average grade? Give the name.",
          "SELECT s.name, AVG(e.grade) AS avg_grade FROM enrollments e JOIN students s ON s.id = e.student_id "
          "GROUP BY s.id ORDER BY avg_grade DESC", "top", "students enrollments", "SELECT name FROM students"),
        t("List the names of the students enrolled in {title}.",
          "SELECT s.name FROM enrollments e " + ENROLLED + " WHERE co.title = '{title}' ORDER BY s.name",
          "names", "students courses enrollments", "SELECT name FROM students", title=("courses", "title")),
        t("Which course has the most students enrolled? Give its title.",
          "SELECT co.title, COUNT(*) AS n FROM enrollments e JOIN courses co ON co.id = e.course_id "
          "GROUP BY co.id ORDER BY n DESC", "top", "courses enrollments", "SELECT title FROM courses"),
        t("How many enrollments are there in courses of the {department} department?",
          "SELECT COUNT(*) FROM enrollments e JOIN courses co ON co.id = e.course_id "
          "WHERE co.department = '{department}'", "number", "courses enrollments",
          department=("courses", "department")),
        t("Students of which major have the highest average grade? Give the major.",
          "SELECT s.major, AVG(e.grade) AS avg_grade FROM enrollments e JOIN students s ON s.id = e.student_id "
          "GROUP BY s.major ORDER BY avg_grade DESC", "top", "students enrollments",
          "SELECT DISTINCT major FROM students"),
        t("How many credits is {student} taking in total, summing the credits of all their courses?",
          "SELECT SUM(co.credits) FROM enrollments e " + ENROLLED + " WHERE s.name = '{student}'",
          "number", "students courses enrollments", student=("students", "name")),
    ],
    entity=Entity(
        "student", "students", "s",
        filters=(("major in {major}", "s.major = '{major}'", {"major": ("students", "major")}),
                 ("are in year {year}", "s.year = {year}", {"year": ("students", "year")})),
        metrics=(("has the highest average grade", "AVG(e.grade)", "JOIN enrollments e ON e.student_id = s.id",
                  ("enrollments",)),
                 ("is enrolled in the most courses", "COUNT(e.id)", "JOIN enrollments e ON e.student_id = s.id",
                  ("enrollments",)),
                 ("is taking the most credits in total (the sum of the credits of their courses)",
                  "SUM(co.credits)",
                  "JOIN enrollments e ON e.student_id = s.id JOIN courses co ON co.id = e.course_id",
                  ("enrollments", "courses"))),
        facts=(t("What is that student's average grade, rounded to 2 decimal places?",
                 "SELECT ROUND(AVG(e.grade), 2) FROM enrollments e JOIN students s ON s.id = e.student_id "
                 "WHERE s.name = '{name}'", "number", "students enrollments"),
               t("How many courses is that student enrolled in?",
                 "SELECT COUNT(*) FROM enrollments e JOIN students s ON s.id = e.student_id "
                 "WHERE s.name = '{name}'", "number", "students enrollments"),
               t("In which course did that student get their highest grade? Give the course title.",
                 "SELECT co.title, e.grade FROM enrollments e " + ENROLLED +
                 " WHERE s.name = '{name}' ORDER BY e.grade DESC", "top", "students courses enrollments",
                 "SELECT title FROM courses")),
    ),
)

BORROWED = "JOIN books b ON b.id = l.book_id JOIN members m ON m.id = l.member_id"
LIBRARY = dict(
    simple=[
        t("How many books does the library have?", "SELECT COUNT(*) FROM books", "number", "books"),
        t("How many books belong to the {genre} genre?", "SELECT COUNT(*) FROM books WHERE genre = '{genre}'",
          "number", "books", genre=("books", "genre")),
        t("How many books were published before {year}?",
          "SELECT COUNT(*) FROM books WHERE published_year < {year}", "number", "books",
          year=("books", "published_year")),
        t("What is the average number of pages of the {genre} books, rounded to 2 decimal places?",
          "SELECT ROUND(AVG(pages), 2) FROM books WHERE genre = '{genre}'", "number", "books",
          genre=("books", "genre")),
        t("Which book has the most pages? Give its title.", "SELECT title, pages FROM books ORDER BY pages DESC",
          "top", "books", "SELECT title FROM books"),
        t("List the names of the authors from {country}.",
          "SELECT name FROM authors WHERE country = '{country}' ORDER BY name", "names", "authors",
          "SELECT name FROM authors", country=("authors", "country")),
        t("How many members live in {city}?", "SELECT COUNT(*) FROM members WHERE city = '{city}'", "number",
          "members", city=("members", "city")),
        t("How many loans lasted more than {days} days?", "SELECT COUNT(*) FROM loans WHERE days_kept > {days}",
          "number", "loans", days=("loans", "days_kept", "cut")),
        t("List the titles of the {genre} books.", "SELECT title FROM books WHERE genre = '{genre}' ORDER BY title",
          "names", "books", "SELECT title FROM books", genre=("books", "genre")),
    ],
    joined=[
        t("How many books written by authors from {country} does the library have?",
          "SELECT COUNT(*) FROM books b JOIN authors a ON a.id = b.author_id WHERE a.country = '{country}'",
          "number", "authors books", country=("authors", "country")),
        t("Which author has the most books in the library? Give the name.",
          "SELECT a.name, COUNT(*) AS n FROM books b JOIN authors a ON a.id = b.author_id "
          "GROUP BY a.id ORDER BY n DESC", "top", "authors books", "SELECT name FROM authors"),
        t("How many times have {genre} books been borrowed?",
          "SELECT COUNT(*) FROM loans l JOIN books b ON b.id = l.book_id WHERE b.genre = '{genre}'",
          "number", "books loans", genre=("books", "genre")),
        t("List the titles of the books that {member} has borrowed.",
          "SELECT DISTINCT b.title FROM loans l " + BORROWED + " WHERE m.name = '{member}' ORDER BY b.title",
          "names", "books members loans", "SELECT title FROM books", member=("members", "name")),
        t("Which book has been borrowed the most times? Give its title.",
          "SELECT b.title, COUNT(*) AS n FROM loans l JOIN books b ON b.id = l.book_id "
          "GROUP BY b.id ORDER BY n DESC", "top", "books loans", "SELECT title FROM books"),
        t("Which member has kept borrowed books the longest in total (the sum of days kept over all their "
          "loans)? Give the name.",
          "SELECT m.name, SUM(l.days_kept) AS days FROM loans l JOIN members m ON m.id = l.member_id "
          "GROUP BY m.id ORDER BY days DESC", "top", "members loans", "SELECT name FROM members"),
        t("How many different members have borrowed books written by {author}?",
          "SELECT COUNT(DISTINCT l.member_id) FROM loans l JOIN books b ON b.id = l.book_id "
          "JOIN authors a ON a.id = b.author_id WHERE a.name = '{author}'", "number", "authors books loans",
          author=("authors", "name")),
        t("Who wrote the book {title}? Give the author's name.",
          "SELECT a.name FROM books b JOIN authors a ON a.id = b.author_id WHERE b.title = '{title}'",
          "names", "authors books", "SELECT name FROM authors", title=("books", "title")),
    ],
    entity=Entity(
        "member", "members", "m",
        filters=(("live in {city}", "m.city = '{city}'", {"city": ("members", "city")}),),
        metrics=(("has borrowed the most books", "COUNT(l.id)", "JOIN loans l ON l.member_id = m.id", ("loans",)),
                 ("has kept borrowed books the longest in total (the sum of days kept)", "SUM(l.days_kept)",
                  "JOIN loans l ON l.member_id = m.id", ("loans",)),
                 ("has borrowed the most pages in total (the sum of the pages of the books they borrowed)",
                  "SUM(b.pages)", "JOIN loans l ON l.member_id = m.id JOIN books b ON b.id = l.book_id",
                  ("loans", "books"))),
        facts=(t("How many loans does that member have?",
                 "SELECT COUNT(*) FROM loans l JOIN members m ON m.id = l.member_id WHERE m.name = '{name}'",
                 "number", "members loans"),
               t("Which genre has that member borrowed most often? Give the genre.",
                 "SELECT b.genre, COUNT(*) AS n FROM loans l " + BORROWED +
                 " WHERE m.name = '{name}' GROUP BY b.genre ORDER BY n DESC", "top", "books members loans",
                 "SELECT DISTINCT genre FROM books"),
               t("For how many days in total has that member kept borrowed books?",
                 "SELECT SUM(l.days_kept) FROM loans l JOIN members m ON m.id = l.member_id "
                 "WHERE m.name = '{name}'", "number", "members loans")),
    ),
)

STAFF = "JOIN departments d ON d.id = e.department_id"
COMPANY = dict(
    simple=[
        t("How many employees are there?", "SELECT COUNT(*) FROM employees", "number", "employees"),
        t("How many employees earn more than ${salary}?", "SELECT COUNT(*) FROM employees WHERE salary > {salary}",
          "number", "employees", salary=("employees", "salary", "cut")),
        t("What is the average salary of the employees hired in {year} or later, rounded to 2 decimal places?",
          "SELECT ROUND(AVG(salary), 2) FROM employees WHERE hire_year >= {year}", "number", "employees",
          year=("employees", "hire_year")),
        t("Which employee has the highest salary? Give the name.",
          "SELECT name, salary FROM employees ORDER BY salary DESC", "top", "employees",
          "SELECT name FROM employees"),
        t("List the names of the employees hired in {year}.",
          "SELECT name FROM employees WHERE hire_year = {year} ORDER BY name", "names", "employees",
          "SELECT name FROM employees", year=("employees", "hire_year")),
        t("How many projects have a budget over ${budget}?", "SELECT COUNT(*) FROM projects WHERE budget > {budget}",
          "number", "projects", budget=("projects", "budget", "cut")),
        t("What is the total budget of all projects, in dollars?", "SELECT SUM(budget) FROM projects", "number",
          "projects"),
        t("How many departments are located in {city}?", "SELECT COUNT(*) FROM departments WHERE city = '{city}'",
          "number", "departments", city=("departments", "city")),
        t("List the names of the departments located in {city}.",
          "SELECT name FROM departments WHERE city = '{city}' ORDER BY name", "names", "departments",
          "SELECT name FROM departments", city=("departments", "city")),
    ],
    joined=[
        t("How many employees work in the {dept} department?",
          "SELECT COUNT(*) FROM employees e " + STAFF + " WHERE d.name = '{dept}'", "number",
          "departments employees", dept=("departments", "name")),
        t("What is the average salary in the {dept} department, rounded to 2 decimal places?",
          "SELECT ROUND(AVG(e.salary), 2) FROM employees e " + STAFF + " WHERE d.name = '{dept}'", "number",
          "departments employees", dept=("departments", "name")),
        t("Which department has the most employees? Give its name.",
          "SELECT d.name, COUNT(*) AS n FROM employees e " + STAFF + " GROUP BY d.id ORDER BY n DESC", "top",
          "departments employees", "SELECT name FROM departments"),
        t("List the names of the employees who work in the {dept} department.",
          "SELECT e.name FROM employees e " + STAFF + " WHERE d.name = '{dept}' ORDER BY e.name", "names",
          "departments employees", "SELECT name FROM employees", dept=("departments", "name")),
        t("What is the total budget, in dollars, of the projects run by the {dept} department?",
          "SELECT SUM(p.budget) FROM projects p JOIN departments d ON d.id = p.department_id "
          "WHERE d.name = '{dept}'", "number", "departments projects", dept=("departments", "name")),
        t("Which department has the largest total project budget? Give its name.",
          "SELECT d.name, SUM(p.budget) AS total FROM projects p JOIN departments d ON d.id = p.department_id "
          "GROUP BY d.id ORDER BY total DESC", "top", "departments projects", "SELECT name FROM departments"),
        t("How many employees work in departments located in {city}?",
          "SELECT COUNT(*) FROM employees e " + STAFF + " WHERE d.city = '{city}'", "number",
          "departments employees", city=("departments", "city")),
        t("Which department runs the project {project}? Give the department's name.",
          "SELECT d.name FROM projects p JOIN departments d ON d.id = p.department_id WHERE p.name = '{project}'",
          "names", "departments projects", "SELECT name FROM departments", project=("projects", "name")),
    ],
    entity=Entity(
        "department", "departments", "d",
        filters=(("are located in {city}", "d.city = '{city}'", {"city": ("departments", "city")}),),
        metrics=(("has the most employees", "COUNT(e.id)", "JOIN employees e ON e.department_id = d.id",
                  ("employees",)),
                 ("pays the highest total salary", "SUM(e.salary)", "JOIN employees e ON e.department_id = d.id",
                  ("employees",)),
                 ("has the largest total project budget", "SUM(p.budget)",
                  "JOIN projects p ON p.department_id = d.id", ("projects",))),
        facts=(t("How many employees work in that department?",
                 "SELECT COUNT(*) FROM employees e " + STAFF + " WHERE d.name = '{name}'", "number",
                 "departments employees"),
               t("Who is the highest-paid employee in that department? Give the name.",
                 "SELECT e.name, e.salary FROM employees e " + STAFF + " WHERE d.name = '{name}' "
                 "ORDER BY e.salary DESC", "top", "departments employees", "SELECT name FROM employees"),
               t("What is the average salary in that department, rounded to 2 decimal places?",
                 "SELECT ROUND(AVG(e.salary), 2) FROM employees e " + STAFF + " WHERE d.name = '{name}'",
                 "number", "departments employees"),
               t("What is the total budget, in dollars, of that department's projects?",
                 "SELECT SUM(p.budget) FROM projects p JOIN departments d ON d.id = p.department_id "
                 "WHERE d.name = '{name}'", "number", "departments projects")),
    ),
)

THEMES = {
    "shop": (shop_db, SHOP),
    "school": (school_db, SCHOOL),
    "library": (library_db, LIBRARY),
    "company": (company_db, COMPANY),
}


# ---- building requests --------------------------------------------------------------------
def _column(tables: list[dict], table: str, column: str) -> list:
    spec = next(x for x in tables if x["name"] == table)
    i = [c for c, _ in spec["columns"]].index(column)
    return sorted({row[i] for row in spec["rows"]})


def _params(r: random.Random, tables: list[dict], params: dict[str, tuple[str, ...]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, (table, column, *how) in sorted(params.items()):
        v = r.choice(_column(tables, table, column))
        if how == ["cut"]:  # a round threshold near a value in the data
            v = int(v // 10 * 10) if v >= 20 else int(v)
        elif how == ["month"]:
            year, month = v[:4], int(v[5:7])
            out[f"{name}_label"] = f"{MONTHS[month - 1]} {year}"
            v = v[:7]
        out[name] = str(v)
    return out


def _mentions(text: str, item: str) -> bool:
    return re.search(r"(?<!\w)" + re.escape(item.lower()) + r"(?!\w)", text.lower()) is not None


def _solve(db: SQLDatabase, tpl: T, values: dict[str, str]) -> tuple[str, dict] | None:
    """The oracle SQL and expected answer of `tpl` filled with `values`; None if unsuitable."""
    sql = tpl.sql.format(**values)
    rows = db.query_rows(sql)
    if tpl.kind == "number":
        if len(rows) != 1 or rows[0][0] in (None, 0):
            return None
        return sql, {"kind": "number", "value": rows[0][0]}
    if tpl.kind == "top":
        if not rows or (len(rows) > 1 and abs(rows[0][1] - rows[1][1]) < 1e-9):
            return None  # no unique top
        sql, items = sql + " LIMIT 1", [rows[0][0]]
    else:
        items = [row[0] for row in rows]
        if not 1 <= len(items) <= 8 or len(set(items)) != len(items):
            return None
    others = sorted({v for (v,) in db.query_rows(tpl.domain)} - set(items))
    if not others or any(_mentions(a, b) or _mentions(b, a) for a in items for b in others):
        return None
    return sql, {"kind": "names", "items": items, "exclude": others}


@dataclass
class Draft:
    requests: list[str] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)
    describe: list[list[str]] = field(default_factory=list)
    answers: list[dict] = field(default_factory=list)

    def add(self, text: str, solved: tuple[str, dict], describe: list[str]) -> None:
        self.requests.append(text)
        self.queries.append(solved[0])
        self.describe.append(describe)
        self.answers.append(solved[1])

    def oracle_turns(self) -> int:
        seen: set[str] = set()
        turns = 0
        for tables in self.describe:
            turns += 2 + (1 if set(tables) - seen else 0)
            seen |= set(tables)
        return turns


def _schema_line(tables: list[dict]) -> str:
    return "; ".join(f"{x['name']}({', '.join(c for c, _ in x['columns'])})" for x in tables)


def _one(r: random.Random, db: SQLDatabase, tables: list[dict], pool: list[T], with_schema: bool) -> Draft | None:
    tpl = r.choice(pool)
    values = _params(r, tables, tpl.params)
    solved = _solve(db, tpl, values)
    if solved is None:
        return None
    draft = Draft()
    text = tpl.text.format(**values)
    if with_schema:
        draft.add(f"The database has these tables: {_schema_line(tables)}.\n{text}", solved, [])
    else:
        draft.add(text, solved, sorted(tpl.tables))
    return draft


def _chain(r: random.Random, db: SQLDatabase, tables: list[dict], ent: Entity) -> Draft | None:
    phrase, pred, params = r.choice(ent.filters)
    values = _params(r, tables, params)
    phrase, pred = phrase.format(**values), pred.format(**values)
    a, plural = ent.alias, ent.table
    size = db.query_rows(f"SELECT COUNT(*) FROM {plural} {a} WHERE {pred}")[0][0]
    if not 2 <= size <= 8:
        return None
    draft = Draft()
    if r.random() < 0.5:
        first = t(f"How many {plural} {phrase}?", f"SELECT COUNT(*) FROM {plural} {a} WHERE {pred}", "number", plural)
    else:
        first = t(f"Which {plural} {phrase}? List their names.",
                  f"SELECT {a}.name FROM {plural} {a} WHERE {pred} ORDER BY {a}.name", "names", plural,
                  f"SELECT name FROM {plural}")
    solved = _solve(db, first, {})
    if solved is None:
        return None
    draft.add(first.text, solved, [plural])
    m_phrase, expr, join, m_tables = r.choice(ent.metrics)
    top = t(f"Which of them {m_phrase}? Give the {ent.noun}'s name.",
            f"SELECT {a}.name, {expr} AS total FROM {plural} {a} {join} WHERE {pred} "
            f"GROUP BY {a}.id ORDER BY total DESC", "top", " ".join((plural, *m_tables)),
            f"SELECT name FROM {plural}")
    solved = _solve(db, top, {})
    if solved is None:
        return None
    draft.add(top.text, solved, sorted(top.tables))
    if r.random() < 0.5:
        fact = r.choice(ent.facts)
        solved = _solve(db, fact, {"name": solved[1]["items"][0]})
        if solved is None:
            return None
        draft.add(fact.text, solved, sorted(fact.tables))
    return draft


def make_task(r: random.Random, split: str, idx: int, difficulty: int) -> dict:
    while True:
        theme = r.choice(sorted(THEMES))
        build, templates = THEMES[theme]
        tables = build(r)
        db = SQLDatabase({"tables": tables})
        for _ in range(20):
            if difficulty == 1:
                draft = _one(r, db, tables, templates["simple"], with_schema=True)
            elif difficulty == 2:
                pool = templates["joined"] if r.random() < 0.65 else templates["simple"]
                draft = _one(r, db, tables, pool, with_schema=False)
            else:
                draft = _chain(r, db, tables, templates["entity"])
            if draft is not None and 2 <= draft.oracle_turns() <= MAX_TURNS:
                db.close()
                return {
                    "id": f"sql-v{VERSION}-{split}-{idx:04d}",
                    "family": "sql",
                    "split": split,
                    "version": VERSION,
                    "difficulty": difficulty,
                    "theme": theme,
                    "requests": draft.requests,
                    "db": {"tables": tables},
                    "queries": draft.queries,
                    "describe": draft.describe,
                    "answers": draft.answers,
                }
        db.close()


def generate(split: str) -> list[dict]:
    r = random.Random(SEEDS[split])
    n = COUNTS[split]
    levels = [1] * round(n * SHARES[1]) + [2] * round(n * SHARES[2])
    levels += [3] * (n - len(levels))
    r.shuffle(levels)
    rows, seen = [], set()
    if split == "test":  # keep test questions out of train
        seen = {tuple(x["requests"]) for x in generate("train")}
    for idx, difficulty in enumerate(levels):
        while True:
            task = make_task(r, split, idx, difficulty)
            key = tuple(task["requests"])
            if key not in seen:
                break
        seen.add(key)
        rows.append(task)
    return rows


if __name__ == "__main__":
    write_splits(Path(__file__).parent / f"v{VERSION}", generate, COUNTS)
