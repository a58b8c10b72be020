"""Building the parsers' NamedTuple records from C (shared by the parser kernels).

A record is built per delta, so these skip the Python-level ``__new__`` of ``typing.NamedTuple``,
and take the records out of the cyclic GC: they hold only str, int, None and other records, so
they can never be part of a cycle, and tracked they were promoted to the old generation while
alive, which made CPython run full collections every few hundred thousand deltas (profiled: 50-60%
of a sustained per-delta stream in a process holding a tokenizer).
"""
from cpython.array cimport array, clone
from cpython.object cimport PyObject
from libc.stdint cimport int64_t
from libc.string cimport memcpy


cdef extern from "Python.h":
    ctypedef struct PyTypeObject:
        PyObject* (*tp_alloc)(PyTypeObject* subtype, Py_ssize_t n)
    object PyTuple_Type_new "PyTuple_Type.tp_new"(PyTypeObject* subtype, object args, PyObject* kwds)
    void PyTuple_SET_ITEM(PyObject* tup, Py_ssize_t pos, PyObject* item)
    void Py_INCREF(PyObject* obj)
    void Py_DECREF(PyObject* obj)
    object PyUnicode_FromKindAndData(int kind, const void* buffer, Py_ssize_t size)
    void PyObject_GC_UnTrack(void* obj)


cdef inline object _untracked(object record):
    PyObject_GC_UnTrack(<PyObject*>record)
    return record


cdef inline object _new_tuple(object cls, tuple values):
    """``tuple.__new__(cls, values)`` without the Python call."""
    return _untracked(PyTuple_Type_new(<PyTypeObject*>cls, (values,), NULL))


cdef inline object _new_pair(object cls, object first, object second):
    """A two-field NamedTuple built as CPython builds tuple subclasses (the type's tp_alloc, then
    the items), without the intermediate tuples of ``tuple.__new__``."""
    cdef PyObject* obj = (<PyTypeObject*>cls).tp_alloc(<PyTypeObject*>cls, 2)
    if obj == NULL:
        raise MemoryError()
    Py_INCREF(<PyObject*>first)
    PyTuple_SET_ITEM(obj, 0, <PyObject*>first)
    Py_INCREF(<PyObject*>second)
    PyTuple_SET_ITEM(obj, 1, <PyObject*>second)
    PyObject_GC_UnTrack(obj)
    record = <object>obj  # a reference of its own: tp_alloc's is given back
    Py_DECREF(obj)
    return record


cdef inline str unicode_from_kind(int kind, const char* buffer, Py_ssize_t size):
    """A str of ``size`` code points of ``kind`` bytes (stored as the narrowest kind that holds them)."""
    return PyUnicode_FromKindAndData(kind, buffer, size)


cdef inline array int64_array(const int64_t* values, Py_ssize_t size):
    """``array('q')`` holding a copy of ``values``."""
    cdef array out = clone(array("q"), size, False)
    if size:
        memcpy(out.data.as_voidptr, values, size * sizeof(int64_t))
    return out
