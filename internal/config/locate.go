package config

import (
	"reflect"
	"strings"
	"sync"

	toml "github.com/pelletier/go-toml/v2"
)

// customKeys maps the TOML names of fields with their own decoding
// (Duration, Quantity, StringOrList) to their type.
var customKeys = sync.OnceValue(func() map[string]reflect.Type {
	m := map[string]reflect.Type{}
	seen := map[reflect.Type]bool{}
	setter := reflect.TypeFor[valueSetter]()
	var visit func(t reflect.Type)
	visit = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || seen[t] {
			return
		}
		seen[t] = true
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if name != "" && reflect.PointerTo(ft).Implements(setter) {
				m[name] = ft
				continue
			}
			visit(f.Type)
		}
	}
	visit(reflect.TypeFor[Config]())
	return m
})

// locateValueError finds the first key = value (in document order) of a
// custom-decoded type whose value fails with msg. The decoder reads its
// input from a copy and stops at the first error, so this reproduces the
// failure to learn where it is.
func (idx *keyIndex) locateValueError(msg string) (kvPos, bool) {
	types := customKeys()
	for _, kv := range idx.kvs {
		t, ok := types[kv.parts[len(kv.parts)-1]]
		if !ok {
			continue
		}
		var doc map[string]any
		if err := toml.Unmarshal(kv.raw, &doc); err != nil {
			continue
		}
		var v any = doc
		for _, part := range kv.parts {
			m, ok := v.(map[string]any)
			if !ok {
				v = nil
				break
			}
			v = m[part]
		}
		if v == nil {
			continue
		}
		s := reflect.New(t).Interface().(valueSetter)
		if err := s.fromValue(nil, v); err != nil && err.Error() == msg {
			return kv, true
		}
	}
	return kvPos{}, false
}
