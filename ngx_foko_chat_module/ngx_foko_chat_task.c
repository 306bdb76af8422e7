
/*
 * Foko chat: blocking work on an nginx thread pool, and the lanes that
 * admit each concern's work to it.
 */


#include "ngx_foko_chat_task.h"


static void ngx_foko_chat_task_thread_handler(void *data, ngx_log_t *log);
static void ngx_foko_chat_task_event_handler(ngx_event_t *ev);
static void ngx_foko_chat_task_request_cleanup(void *data);


/* tasks of this worker posted and not yet completed */
static ngx_uint_t  ngx_foko_chat_tasks_in_flight;


ngx_foko_chat_task_t *
ngx_foko_chat_task_create(size_t data_size, ngx_log_t *log)
{
    ngx_foko_chat_task_t  *task;

    task = ngx_calloc(sizeof(ngx_foko_chat_task_t) + data_size, log);
    if (task == NULL) {
        return NULL;
    }

    task->log = log;
    task->data = data_size ? (void *) (task + 1) : NULL;
    task->data_size = data_size;

    task->thread_task.ctx = task;
    task->thread_task.handler = ngx_foko_chat_task_thread_handler;
    task->thread_task.event.data = task;
    task->thread_task.event.handler = ngx_foko_chat_task_event_handler;
    task->thread_task.event.log = log;

    return task;
}


/* the data may hold a password: it is wiped, not just freed */

void
ngx_foko_chat_task_free(ngx_foko_chat_task_t *task)
{
    if (task->data) {
        ngx_explicit_memzero(task->data, task->data_size);
    }

    ngx_free(task);
}


ngx_int_t
ngx_foko_chat_task_post(ngx_foko_chat_task_t *task, ngx_thread_pool_t *tp)
{
    if (ngx_thread_task_post(tp, &task->thread_task) != NGX_OK) {
        return NGX_ERROR;
    }

    task->again = 1;
    ngx_foko_chat_tasks_in_flight++;

    return NGX_OK;
}


/*
 * Ties a task to a request.  The caller then returns NGX_DONE from its
 * content handler: the extra reference taken here keeps the request until
 * "done" finalizes it, and a request cleanup tells the task if the request
 * is terminated meanwhile (the client went away).
 */

ngx_int_t
ngx_foko_chat_task_attach(ngx_foko_chat_task_t *task, ngx_http_request_t *r)
{
    ngx_http_cleanup_t  *cln;

    cln = ngx_http_cleanup_add(r, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_foko_chat_task_request_cleanup;
    cln->data = task;

    task->request = r;
    task->cleanup = cln;
    task->log = r->connection->log;
    task->thread_task.event.log = r->connection->log;

    r->main->count++;
    r->read_event_handler = ngx_http_test_reading;

    return NGX_OK;
}


ngx_int_t
ngx_foko_chat_task_post_request(ngx_foko_chat_task_t *task,
    ngx_thread_pool_t *tp, ngx_http_request_t *r)
{
    if (task->request == r) {
        /* a further step of a task that holds the request already */
        return ngx_foko_chat_task_post(task, tp);
    }

    if (ngx_foko_chat_task_attach(task, r) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_foko_chat_task_post(task, tp) != NGX_OK) {
        /* undo the attachment: the caller answers the request itself */
        task->again = 0;
        task->cleanup->handler = NULL;
        task->request = NULL;
        r->main->count--;
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * A step that needs no thread (everything it reads is in the zone): "run"
 * here, "done" on the event loop's next turn, as after the thread pool.
 * It does not wait behind the blocking work queued on the pool.
 */

void
ngx_foko_chat_task_post_here(ngx_foko_chat_task_t *task)
{
    task->run(task, task->log);

    task->again = 1;
    ngx_foko_chat_tasks_in_flight++;

    ngx_post_event(&task->thread_task.event, &ngx_posted_events);
}


/* completes a task that could not be posted, as if it had run */

void
ngx_foko_chat_task_fail(ngx_foko_chat_task_t *task)
{
    task->failed = 1;

    /* as the pool's completion would */
    ngx_foko_chat_tasks_in_flight++;

    ngx_foko_chat_task_event_handler(&task->thread_task.event);
}


ngx_uint_t
ngx_foko_chat_task_in_flight(void)
{
    return ngx_foko_chat_tasks_in_flight;
}


void
ngx_foko_chat_lane_init(ngx_foko_chat_lane_t *lane, ngx_uint_t limit,
    ngx_uint_t max_waiting, ngx_foko_chat_lane_start_pt start)
{
    ngx_memzero(lane, sizeof(ngx_foko_chat_lane_t));

    lane->limit = limit;
    lane->most = limit;
    lane->max_waiting = max_waiting;
    lane->start = start;

    ngx_queue_init(&lane->queue);
}


/* an entry runs at once only if none waits before it */

ngx_int_t
ngx_foko_chat_lane_enter(ngx_foko_chat_lane_t *lane, ngx_queue_t *entry)
{
    if (lane->running < lane->limit && ngx_queue_empty(&lane->queue)) {
        lane->running++;
        return NGX_OK;
    }

    if (lane->max_waiting && lane->waiting >= lane->max_waiting) {
        return NGX_DECLINED;
    }

    ngx_queue_insert_tail(&lane->queue, entry);
    lane->waiting++;

    return NGX_AGAIN;
}


/*
 * A slot is given back: the next waiting entries start, in turn.  An
 * entry that leaves at once, as it starts, does not start the next one
 * itself: no recursion through the whole queue.
 */

void
ngx_foko_chat_lane_leave(ngx_foko_chat_lane_t *lane)
{
    ngx_queue_t  *q;

    lane->running--;

    if (lane->starting) {
        return;
    }

    lane->starting = 1;

    while (lane->running < lane->limit && !ngx_queue_empty(&lane->queue)) {
        q = ngx_queue_head(&lane->queue);
        ngx_queue_remove(q);
        lane->waiting--;
        lane->running++;

        if (lane->start(q) != NGX_OK) {
            lane->running--;
        }
    }

    lane->starting = 0;
}


/* a waiting entry that goes away before its turn */

void
ngx_foko_chat_lane_cancel(ngx_foko_chat_lane_t *lane, ngx_queue_t *entry)
{
    ngx_queue_remove(entry);
    lane->waiting--;
}


/* NGX_OK if the lane was slowed down now */

ngx_int_t
ngx_foko_chat_lane_slower(ngx_foko_chat_lane_t *lane)
{
    ngx_uint_t  least;

    least = ngx_max(lane->most / 16, 1);

    if (lane->limit == least
        || (lane->slowed && ngx_current_msec - lane->slowed < 1000))
    {
        return NGX_DECLINED;
    }

    lane->slowed = ngx_current_msec;
    lane->limit = ngx_max(lane->limit / 2, least);

    return NGX_OK;
}


void
ngx_foko_chat_lane_faster(ngx_foko_chat_lane_t *lane)
{
    if (lane->limit < lane->most) {
        lane->limit++;
    }
}


static void
ngx_foko_chat_task_thread_handler(void *data, ngx_log_t *log)
{
    ngx_foko_chat_task_t  *task = data;

    task->run(task, log);
}


static void
ngx_foko_chat_task_event_handler(ngx_event_t *ev)
{
    ngx_foko_chat_task_t  *task = ev->data;

    ngx_int_t            rc;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    ngx_foko_chat_tasks_in_flight--;

    r = task->request;
    c = r ? r->connection : NULL;

    task->again = 0;

    rc = task->done(task);

    if (task->again) {
        /* "done" posted the task again for its next step */
        return;
    }

    if (r == NULL || task->request == NULL) {
        ngx_foko_chat_task_free(task);
        return;
    }

    task->cleanup->handler = NULL;
    ngx_foko_chat_task_free(task);

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


static void
ngx_foko_chat_task_request_cleanup(void *data)
{
    ngx_foko_chat_task_t  *task = data;

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, task->log, 0,
                   "foko chat: request gone before its task completed");

    task->request = NULL;
    task->log = ngx_cycle->log;
    task->thread_task.event.log = ngx_cycle->log;
}
