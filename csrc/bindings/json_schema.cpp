// JSON Schema -> GBNF with llama.cpp's own converter (common/json-schema-to-grammar.cpp, compiled
// into the extension by CMakeLists.txt). Which schemas to accept is decided in Python
// (pybonsai.json_schema); this only runs the converter and reports what it said.
#include "core.h"

#include "json-schema-to-grammar.h"

#include <pybind11/stl.h>

#include <utility>
#include <vector>

namespace pybonsai {

void init_json_schema(py::module_ & m) {
    m.def("json_schema_to_grammar", [](const std::string & schema) {
        std::string grammar, error;
        std::string warnings = capture_stderr([&] {
            try {
                grammar = json_schema_to_grammar(common_json::parse(schema), /* force_gbnf */ true);
            } catch (const std::exception & e) {
                error = e.what();
            }
        });
        if (!error.empty()) throw py::value_error(error);
        return py::make_tuple(grammar, warnings);
    }, py::arg("schema_json"),
    "(GBNF grammar, converter warnings) for a JSON Schema given as JSON text; ValueError if it cannot convert.");

    // Several schemas as named rules of one grammar, plus rules written by the caller (which
    // refer to the schemas' rule names): what tool-call grammars need.
    m.def("json_schemas_to_grammar", [](const std::vector<std::pair<std::string, std::string>> & schemas,
                                        const std::vector<std::pair<std::string, std::string>> & rules) {
        std::string grammar, error;
        std::vector<std::string> names;
        std::string warnings = capture_stderr([&] {
            try {
                std::vector<common_chat_schema_document> docs;
                for (auto & [name, text] : schemas) docs.push_back(common_chat_schema_from_json(common_json::parse(text)));
                grammar = build_grammar([&](const common_grammar_builder & b) {
                    for (size_t i = 0; i < docs.size(); i++) names.push_back(b.add_schema(schemas[i].first, *docs[i].root));
                    for (auto & [name, body] : rules) b.add_rule(name, body);
                });
            } catch (const std::exception & e) {
                error = e.what();
            }
        });
        if (!error.empty()) throw py::value_error(error);
        return py::make_tuple(grammar, warnings, names);
    }, py::arg("schemas"), py::arg("rules"),
    "(GBNF grammar, converter warnings, rule names given to the schemas) for [(rule name, schema JSON)] and "
    "extra [(rule name, GBNF body)].");
}

}  // namespace pybonsai
