package spec

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// decode reads exactly one YAML document into s. Unknown fields are found
// by walking the document against the spec's types, so each is reported
// with its path, the object's name and the nearest known field; the
// decoder's own messages, which name Go types, never reach the operator.
func decode(b []byte, s *Spec) error {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("spec: the file is empty; start from examples/knox-epouta.yaml")
		}
		return fmt.Errorf("spec: %s", plainYAMLError(err.Error(), nil))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		line := extra.Line
		if err != nil {
			return fmt.Errorf("spec: after the first document: %s", plainYAMLError(err.Error(), nil))
		}
		return fmt.Errorf("spec: line %d: a second YAML document follows the first; a spec is one document (remove the --- and what follows, or split the file)", line)
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return errors.New("spec: the file is empty; start from examples/knox-epouta.yaml")
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return fmt.Errorf("spec: line %d: a spec is a mapping of fabric, sites, link, networks, ...; found %s", root.Line, kindName(root))
	}
	var errs []error
	paths := map[int]string{}
	walk(root, reflect.TypeOf(Spec{}), "", &errs, paths)
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	strict := yaml.NewDecoder(bytes.NewReader(b))
	strict.KnownFields(true)
	if err := strict.Decode(s); err != nil {
		return fmt.Errorf("spec: %s", plainYAMLError(err.Error(), paths))
	}
	return nil
}

// walk checks every mapping key against the struct it fills and records
// the path of each line, for messages about values.
func walk(n *yaml.Node, t reflect.Type, path string, errs *[]error, paths map[int]string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if _, seen := paths[n.Line]; !seen && path != "" {
		paths[n.Line] = path
	}
	switch {
	case n.Kind == yaml.AliasNode:
		// Not followed: the anchored node was walked where it stands, and
		// following aliases would let a few lines of anchors cost
		// exponential time. The strict decode below still checks them.
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		fields := yamlFields(t)
		obj := path
		if name := mappingValue(n, "name"); name != "" && path != "" {
			obj = fmt.Sprintf("%s (%s)", path, name)
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			ft, ok := fields[k.Value]
			if !ok {
				where := obj
				if where == "" {
					where = "the top level"
				}
				msg := fmt.Sprintf("spec: line %d: unknown field %s in %s", k.Line, k.Value, where)
				if s := suggest(k.Value, fields); s != "" {
					msg += "; did you mean " + s + "?"
				} else {
					msg += "; known fields: " + strings.Join(sortedKeys(fields), ", ")
				}
				*errs = append(*errs, errors.New(msg))
				continue
			}
			walk(val, ft, join(path, k.Value), errs, paths)
		}
	case (t.Kind() == reflect.Slice) && n.Kind == yaml.SequenceNode:
		for i, c := range n.Content {
			walk(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i), errs, paths)
		}
	case t.Kind() == reflect.Map && n.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			walk(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value), errs, paths)
		}
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func mappingValue(n *yaml.Node, key string) string {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key && n.Content[i+1].Kind == yaml.ScalarNode {
			return n.Content[i+1].Value
		}
	}
	return ""
}

// yamlFields maps a struct's YAML keys to their types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Type
	}
	return out
}

func sortedKeys(m map[string]reflect.Type) []string {
	return slices.Sorted(maps.Keys(m))
}

// suggest returns the known field nearest to a typo, if it is near enough
// to be what was meant.
func suggest(typo string, fields map[string]reflect.Type) string {
	best, bestD := "", 1<<30
	for _, k := range sortedKeys(fields) {
		if d := distance(strings.ToLower(typo), k); d < bestD {
			best, bestD = k, d
		}
	}
	if bestD <= len(typo)/3+1 && bestD < len(typo) {
		return best
	}
	return ""
}

// distance is the Levenshtein distance.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	default:
		return fmt.Sprintf("%q", n.Value)
	}
}

var (
	yamlLineRE = regexp.MustCompile(`line (\d+): `)
	// "cannot unmarshal !!str `abc` into int" and the like.
	yamlTypeRE  = regexp.MustCompile("cannot unmarshal !!(\\w+)( `[^`]*`)? into ([\\w.\\[\\]*]+)")
	yamlFieldRE = regexp.MustCompile(`field (\S+) not found in type [\w.]+`)
)

// goTypeWords says what a Go type means to someone writing YAML.
func goTypeWords(t string) string {
	switch {
	case strings.HasPrefix(t, "[]"):
		return "a list"
	case strings.HasPrefix(t, "map["):
		return "a mapping"
	case strings.Contains(t, "int"):
		return "a number"
	case t == "bool":
		return "true or false"
	case t == "string":
		return "a string"
	default:
		return "a mapping"
	}
}

// plainYAMLError rewrites the decoder's messages for an operator: the
// field's path instead of a Go type, and what was expected.
func plainYAMLError(msg string, paths map[int]string) string {
	msg = strings.TrimPrefix(msg, "yaml: ")
	msg = strings.TrimPrefix(msg, "unmarshal errors:\n")
	var out []string
	for _, line := range strings.Split(msg, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		line = yamlTypeRE.ReplaceAllStringFunc(line, func(m string) string {
			sm := yamlTypeRE.FindStringSubmatch(m)
			found := map[string]string{"seq": "a list", "map": "a mapping", "str": "a string", "int": "a number", "bool": "true or false", "float": "a number", "null": "nothing"}[sm[1]]
			if found == "" {
				found = sm[1]
			}
			if sm[2] != "" {
				found = strings.TrimSpace(sm[2])
			}
			return fmt.Sprintf("%s is not %s", strings.Trim(found, "`"), goTypeWords(sm[3]))
		})
		line = yamlFieldRE.ReplaceAllString(line, "unknown field $1")
		if m := yamlLineRE.FindStringSubmatch(line); m != nil {
			if n, err := strconv.Atoi(m[1]); err == nil && paths[n] != "" {
				line = strings.Replace(line, m[0], fmt.Sprintf("line %d: %s: ", n, paths[n]), 1)
			}
		}
		out = append(out, line)
	}
	return strings.Join(out, "; ")
}
