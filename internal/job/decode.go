package job

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
)

// Limits applied by Decode.
const (
	// DefaultTimeoutSeconds is the job timeout when runner_info.timeout is
	// not positive, as in GitLab Runner.
	DefaultTimeoutSeconds = 7200
	// MaxTimeoutSeconds is the largest accepted job or step timeout; GitLab
	// itself does not allow more than a month.
	MaxTimeoutSeconds = 31 * 24 * 3600
)

// StepRelease is the step GitLab sends for the release keyword.
const StepRelease = "release"

// DecodeError is a payload that could not be decoded or is not valid. Path
// names the offending field (e.g. "steps[0].script").
type DecodeError struct {
	Path string
	Msg  string
}

func (e *DecodeError) Error() string {
	if e.Path == "" {
		return "job payload: " + e.Msg
	}
	return "job payload: " + e.Path + ": " + e.Msg
}

// Decode parses and validates a job payload (the 201 body of jobs/request).
//
// On success it returns the payload with defaults applied (empty step when
// → on_success). On failure the error is a *DecodeError naming the field.
// When the payload is malformed but its id and token could still be read,
// Decode also returns a partial *Payload holding them (and whatever else was
// decoded) so that the caller can fail that job in GitLab; otherwise the
// payload is nil.
func Decode(data []byte) (*Payload, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var raw any
	if err := dec.Decode(&raw); err != nil {
		return partialStream(data), &DecodeError{Msg: "not valid JSON: " + err.Error()}
	}
	if dec.More() {
		return nil, &DecodeError{Msg: "unexpected data after the JSON object"}
	}
	obj, ok := raw.(map[string]any)
	if !ok {
		return nil, &DecodeError{Msg: "expected an object, got " + jsonKind(raw)}
	}
	if err := check(reflect.TypeFor[Payload](), raw, ""); err != nil {
		return partial(obj), err
	}
	var p Payload
	if err := json.Unmarshal(data, &p); err != nil {
		// check() accepts only what Unmarshal can decode; keep a clear
		// error anyway rather than trusting that.
		return partial(obj), &DecodeError{Msg: err.Error()}
	}
	if err := p.validate(); err != nil {
		if p.ID > 0 && p.Token != "" {
			return &p, err
		}
		return nil, err
	}
	return &p, nil
}

// partial extracts id and token from a malformed payload.
func partial(obj map[string]any) *Payload {
	n, ok := obj["id"].(json.Number)
	if !ok {
		return nil
	}
	id, err := strconv.ParseInt(n.String(), 10, 64)
	if err != nil || id <= 0 {
		return nil
	}
	tok, ok := obj["token"].(string)
	if !ok || tok == "" {
		return nil
	}
	return &Payload{ID: id, Token: tok}
}

// partialStream reads the top-level members of a payload that is not valid
// JSON (e.g. truncated) up to the first syntax error, looking for id and
// token, so that such a job can still be failed.
func partialStream(data []byte) *Payload {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil
	}
	obj := map[string]any{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			break
		}
		key, ok := t.(string)
		if !ok {
			break
		}
		var v any
		if err := dec.Decode(&v); err != nil {
			break
		}
		if key == "id" || key == "token" {
			obj[key] = v
		}
	}
	return partial(obj)
}

func (p *Payload) validate() error {
	if p.ID <= 0 {
		return &DecodeError{Path: "id", Msg: fmt.Sprintf("must be a positive job id, got %d", p.ID)}
	}
	if p.Token == "" {
		return &DecodeError{Path: "token", Msg: "missing job token"}
	}
	if p.RunnerInfo.Timeout > MaxTimeoutSeconds {
		return &DecodeError{Path: "runner_info.timeout", Msg: fmt.Sprintf("%d s is more than the maximum of %d s (31 days)", p.RunnerInfo.Timeout, MaxTimeoutSeconds)}
	}
	if len(p.Steps) == 0 {
		return &DecodeError{Path: "steps", Msg: "the job has no steps; nothing to run"}
	}
	seen := map[string]bool{}
	for i := range p.Steps {
		s := &p.Steps[i]
		path := fmt.Sprintf("steps[%d]", i)
		switch {
		case s.Name == "":
			return &DecodeError{Path: path + ".name", Msg: "missing step name"}
		case s.Name == "run":
			return &DecodeError{Path: path + ".name", Msg: `native steps ("run:") are not supported by podrunner; use script:`}
		case !validStepName(s.Name):
			return &DecodeError{Path: path + ".name", Msg: fmt.Sprintf("unknown step name %q (expected script, after_script or release)", s.Name)}
		case seen[s.Name]:
			return &DecodeError{Path: path + ".name", Msg: fmt.Sprintf("step %q appears twice", s.Name)}
		}
		seen[s.Name] = true
		switch s.When {
		case "":
			s.When = WhenOnSuccess
		case WhenOnSuccess, WhenOnFailure, WhenAlways:
		default:
			return &DecodeError{Path: path + ".when", Msg: fmt.Sprintf("unknown value %q (expected on_success, on_failure or always)", s.When)}
		}
		if s.Timeout < 0 || s.Timeout > MaxTimeoutSeconds {
			return &DecodeError{Path: path + ".timeout", Msg: fmt.Sprintf("%d s is outside 0..%d", s.Timeout, MaxTimeoutSeconds)}
		}
		for j, line := range s.Script {
			if strings.IndexByte(line, 0) >= 0 {
				return &DecodeError{Path: fmt.Sprintf("%s.script[%d]", path, j), Msg: "contains a NUL byte, which no shell can run"}
			}
		}
	}
	for i, v := range p.Variables {
		path := fmt.Sprintf("variables[%d]", i)
		if v.Key == "" {
			return &DecodeError{Path: path + ".key", Msg: "empty variable name"}
		}
		if strings.ContainsAny(v.Key, "=\x00") {
			return &DecodeError{Path: path + ".key", Msg: fmt.Sprintf("variable name %q contains '=' or NUL", v.Key)}
		}
		if strings.IndexByte(v.Value, 0) >= 0 {
			return &DecodeError{Path: path + ".value", Msg: fmt.Sprintf("value of %s contains a NUL byte, which cannot be passed to a shell", v.Key)}
		}
	}
	for i, h := range p.Hooks {
		for j, line := range h.Script {
			if strings.IndexByte(line, 0) >= 0 {
				return &DecodeError{Path: fmt.Sprintf("hooks[%d].script[%d]", i, j), Msg: "contains a NUL byte, which no shell can run"}
			}
		}
	}
	return nil
}

func validStepName(name string) bool {
	switch name {
	case StepScript, StepAfterScript, StepRelease:
		return true
	}
	return false
}

// check verifies that v (decoded with UseNumber) fits Go type t, so that
// json.Unmarshal will not fail, and reports the first mismatch with its path.
// Unknown object keys are ignored (GitLab adds fields over time); null is
// accepted everywhere, as encoding/json does.
func check(t reflect.Type, v any, path string) error {
	if v == nil {
		return nil
	}
	mismatch := func(want string) error {
		return &DecodeError{Path: path, Msg: fmt.Sprintf("expected %s, got %s", want, jsonKind(v))}
	}
	switch t.Kind() {
	case reflect.Pointer:
		return check(t.Elem(), v, path)
	case reflect.String:
		if _, ok := v.(string); !ok {
			return mismatch("string")
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			return mismatch("boolean")
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := v.(json.Number)
		if !ok {
			return mismatch("integer")
		}
		i, err := strconv.ParseInt(n.String(), 10, 64)
		if err != nil || reflect.New(t).Elem().OverflowInt(i) {
			return &DecodeError{Path: path, Msg: fmt.Sprintf("expected integer, got %s", n)}
		}
	case reflect.Float32, reflect.Float64:
		n, ok := v.(json.Number)
		if !ok {
			return mismatch("number")
		}
		f, err := strconv.ParseFloat(n.String(), 64)
		if err != nil || math.IsInf(f, 0) {
			return &DecodeError{Path: path, Msg: fmt.Sprintf("number %s out of range", n)}
		}
	case reflect.Slice:
		arr, ok := v.([]any)
		if !ok {
			return mismatch("array of " + typeName(t.Elem()))
		}
		for i, e := range arr {
			if err := check(t.Elem(), e, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				var de *DecodeError
				if errors.As(err, &de) && de.Path == fmt.Sprintf("%s[%d]", path, i) && t.Elem().Kind() != reflect.Struct && t.Elem().Kind() != reflect.Slice {
					// Name the container for scalar arrays: "expected
					// array of strings, got number" reads better.
					return &DecodeError{Path: path, Msg: fmt.Sprintf("expected array of %s, got %s at index %d", typeName(t.Elem()), jsonKind(e), i)}
				}
				return err
			}
		}
	case reflect.Map:
		obj, ok := v.(map[string]any)
		if !ok {
			return mismatch("object")
		}
		for k, e := range obj {
			if err := check(t.Elem(), e, join(path, k)); err != nil {
				return err
			}
		}
	case reflect.Struct:
		obj, ok := v.(map[string]any)
		if !ok {
			return mismatch("object")
		}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" || !f.IsExported() {
				continue
			}
			if name == "" {
				name = f.Name
			}
			// encoding/json matches keys case-insensitively; GitLab
			// sends exact names, so look up the exact one first.
			e, ok := obj[name]
			if !ok {
				for k, kv := range obj {
					if strings.EqualFold(k, name) {
						e, ok = kv, true
						break
					}
				}
			}
			if !ok {
				continue
			}
			if err := check(f.Type, e, join(path, name)); err != nil {
				return err
			}
		}
	case reflect.Interface:
		// anything goes
	default:
		return &DecodeError{Path: path, Msg: "unsupported field type " + t.String()}
	}
	return nil
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Pointer:
		return typeName(t.Elem())
	case reflect.String:
		return "strings"
	case reflect.Bool:
		return "booleans"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "integers"
	case reflect.Float32, reflect.Float64:
		return "numbers"
	case reflect.Slice:
		return "arrays"
	default:
		return "objects"
	}
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case bool:
		return "boolean"
	case json.Number:
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}
