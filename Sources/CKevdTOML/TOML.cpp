// toml++ behind a C interface (include/CKevdTOML.h).
//
// Built header-only from Debian's libtomlplusplus-dev, so the binaries need no libtomlplusplus3 at run time and
// the parser is compiled with the settings below rather than the shared library's:
// - TOML_EXCEPTIONS=0 (Package.swift): parse() returns a parse_result holding the table or the error; a syntax
//   error is a value, never an exception crossing into Swift.
// - Assertions stay on even in release builds. toml++ asserts on a few malformed inputs instead of reporting them
//   (found by fuzzing: TOMLLocator's unparsableHeader and unparsableArrayElement refuse those first); with NDEBUG
//   its assertions become optimizer assumptions, which would make any input still unknown undefined behaviour
//   rather than a clean abort.
#ifdef NDEBUG
#undef NDEBUG
#endif
#include <cassert>

#if !__has_include(<toml++/toml.h>)
#error "toml++ is missing: apt-get install libtomlplusplus-dev (see scripts/deps.sh)"
#endif
#include <toml++/toml.h>

#include <cstring>
#include <new>

#include "CKevdTOML.h"

struct kevd_toml_document {
    toml::table table;
};

namespace {

const toml::node &node(const kevd_toml_node *n) { return *reinterpret_cast<const toml::node *>(n); }

const kevd_toml_node *handle(const toml::node &n) { return reinterpret_cast<const kevd_toml_node *>(&n); }

void fail(kevd_toml_error *error, uint32_t line, uint32_t column, std::string_view message) {
    error->line = line;
    error->column = column;
    size_t n = message.size() < sizeof error->message - 1 ? message.size() : sizeof error->message - 1;
    std::memcpy(error->message, message.data(), n);
    error->message[n] = 0;
}

}  // namespace

extern "C" {

kevd_toml_document *kevd_toml_parse(const char *text, size_t length, kevd_toml_error *error) {
    try {
        toml::parse_result result = toml::parse(std::string_view(text, length));
        if (!result) {
            const toml::parse_error &e = result.error();
            fail(error, e.source().begin.line, e.source().begin.column, e.description());
            return nullptr;
        }
        return new kevd_toml_document{std::move(result).table()};
    } catch (const std::bad_alloc &) {
        fail(error, 0, 0, "out of memory");
        return nullptr;
    }
}

void kevd_toml_free(kevd_toml_document *document) { delete document; }

const kevd_toml_node *kevd_toml_root(const kevd_toml_document *document) { return handle(document->table); }

kevd_toml_type kevd_toml_type_of(const kevd_toml_node *n) {
    switch (node(n).type()) {
    case toml::node_type::table: return KEVD_TOML_TABLE;
    case toml::node_type::array: return KEVD_TOML_ARRAY;
    case toml::node_type::string: return KEVD_TOML_STRING;
    case toml::node_type::integer: return KEVD_TOML_INTEGER;
    case toml::node_type::floating_point: return KEVD_TOML_FLOAT;
    case toml::node_type::boolean: return KEVD_TOML_BOOLEAN;
    case toml::node_type::date: return KEVD_TOML_DATE;
    case toml::node_type::time: return KEVD_TOML_TIME;
    case toml::node_type::date_time: return KEVD_TOML_DATE_TIME;
    case toml::node_type::none: break;
    }
    return KEVD_TOML_STRING;  // toml++ never gives a parsed node no type.
}

size_t kevd_toml_count(const kevd_toml_node *n) {
    if (auto table = node(n).as_table()) return table->size();
    if (auto array = node(n).as_array()) return array->size();
    return 0;
}

void kevd_toml_table_entries(
    const kevd_toml_node *n, const char **keys, size_t *key_lengths, const kevd_toml_node **values) {
    size_t i = 0;
    for (auto &&[key, value] : *node(n).as_table()) {
        keys[i] = key.str().data();
        key_lengths[i] = key.str().size();
        values[i] = handle(value);
        i++;
    }
}

const kevd_toml_node *kevd_toml_array_element(const kevd_toml_node *n, size_t index) {
    return handle((*node(n).as_array())[index]);
}

const char *kevd_toml_string(const kevd_toml_node *n, size_t *length) {
    const std::string &s = node(n).as_string()->get();
    *length = s.size();
    return s.data();
}

int64_t kevd_toml_integer(const kevd_toml_node *n) { return node(n).as_integer()->get(); }

double kevd_toml_float(const kevd_toml_node *n) { return node(n).as_floating_point()->get(); }

bool kevd_toml_boolean(const kevd_toml_node *n) { return node(n).as_boolean()->get(); }

}  // extern "C"
